"""Matching imported tracks to the catalog: by Spotify id, else by normalised artist + title.

Where it sits: every history importer (rl/feedback/importers/) calls ``CatalogMatcher.match``
on a chunk of plays; the result decides a play's ``track_id`` and ``in_catalog``.

Normalisation (why each step): case and accents differ between sources ("Beyoncé" /
"Beyonce"); featured artists and version tags are written in brackets or after a dash in
one source and not the other ("Song (feat. X)", "Song - Remastered 2011"); punctuation and
spacing vary ("P!nk", "Guns N' Roses"). The key is the first listed artist and the title,
each lower-cased, accent-free, with bracketed parts and " - <version>" suffixes removed
and every run of non-alphanumerics collapsed to one space. Unmatched tracks keep an id of
their own: the bare Spotify id when the source has one, else ``ext:`` + a hash of the key,
so the same song from two rows of a source is one item.

A play with a Spotify id is matched by that id only: another id is another recording (a
remaster, a live take, a compilation's copy) with other audio features, and keeping the
source's id keeps each recording one item (the shared history's published figures count
items by ``spotify_track_uri``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd

_BRACKETS = re.compile(r"[\(\[\{][^\)\]\}]*[\)\]\}]")
_VERSION_SUFFIX = re.compile(r"\s+-\s+.*$")
_FEATURING = re.compile(r"\s+(feat\.?|ft\.?|featuring|with)\s+.*$")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_ARTIST_SEPARATORS = re.compile(r"\s*(,|&|;|\bx\b|\band\b)\s*")
_SPOTIFY_ID = re.compile(r"^[0-9A-Za-z]{22}$")


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch)).lower()


def normalise_title(title: str) -> str:
    title = _plain(title)
    title = _BRACKETS.sub(" ", title)
    title = _VERSION_SUFFIX.sub("", title)
    title = _FEATURING.sub("", title)
    return _NON_ALNUM.sub(" ", title).strip()


def normalise_artist(artist: str) -> str:
    artist = _FEATURING.sub("", _plain(artist))
    first = _ARTIST_SEPARATORS.split(artist, maxsplit=1)[0]
    return _NON_ALNUM.sub(" ", first).strip()


def track_key(artist: str | None, title: str | None) -> str | None:
    """'artist|title' after normalisation; None when either is missing or empty."""
    if not isinstance(artist, str) or not isinstance(title, str):
        return None
    artist_key, title_key = normalise_artist(artist), normalise_title(title)
    if not artist_key or not title_key:
        return None
    return f"{artist_key}|{title_key}"


def spotify_id_of(value: object) -> str | None:
    """The 22-character track id in 'spotify:track:ID', an open.spotify.com URL, or a bare id."""
    if not isinstance(value, str) or not value:
        return None
    candidate = value.strip().rstrip("/").split("?")[0]
    candidate = candidate.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    return candidate if _SPOTIFY_ID.match(candidate) else None


@dataclass
class MatchResult:
    track_id: np.ndarray  # (n,) object str
    in_catalog: np.ndarray  # (n,) bool
    by_spotify_id: np.ndarray  # (n,) bool
    by_name: np.ndarray  # (n,) bool


class CatalogMatcher:
    """Maps (spotify id, artist, title) to catalog track ids (see the module docstring)."""

    def __init__(self, track_ids: np.ndarray, artists: np.ndarray, titles: np.ndarray) -> None:
        self.catalog_ids = set(str(track) for track in track_ids)
        self.by_key: dict[str, str] = {}
        for track, artist, title in zip(track_ids, artists, titles, strict=True):
            key = track_key(artist, title)
            if key is not None:
                self.by_key.setdefault(key, str(track))  # first row wins, as the catalog's dedup
        self._key_cache: dict[tuple[str, str], str | None] = {}

    @classmethod
    def from_catalog_uri(cls, uri: str | None = None) -> CatalogMatcher:
        from rl.songs.catalog import load_catalog

        catalog = load_catalog(uri)
        metadata = catalog.metadata
        return cls(
            catalog.track_ids,
            metadata["track_artist"].to_numpy(dtype=object),
            metadata["track_name"].to_numpy(dtype=object),
        )

    def _key(self, artist: object, title: object) -> str | None:
        pair = (artist if isinstance(artist, str) else "", title if isinstance(title, str) else "")
        if pair not in self._key_cache:
            self._key_cache[pair] = track_key(*pair)
        return self._key_cache[pair]

    def match(
        self,
        spotify_ids: pd.Series,
        artists: pd.Series,
        titles: pd.Series,
        own_ids: pd.Series | None = None,
    ) -> MatchResult:
        """Per play: its Spotify id (in the catalog or not); without one, the catalog id of
        its name key, else the source's ``own_ids``, else ``ext:`` + a hash of the key.

        Returns ``track_id`` None where a play has neither a Spotify id nor a usable
        artist + title (the importer quarantines those)."""
        n = len(spotify_ids)
        own = pd.Series([None] * n, dtype=object) if own_ids is None else own_ids
        frame = pd.DataFrame(
            {
                "spotify": spotify_ids.to_numpy(dtype=object),
                "artist": artists.to_numpy(dtype=object),
                "title": titles.to_numpy(dtype=object),
                "own": own.to_numpy(dtype=object),
            }
        )
        # Match each distinct (id, artist, title, own id) once: histories repeat songs.
        codes = frame.groupby(list(frame.columns), dropna=False, sort=False).ngroup().to_numpy()
        unique = frame.drop_duplicates().to_numpy(dtype=object)
        track_id = np.empty(len(unique), dtype=object)
        by_id, by_name = np.zeros(len(unique), bool), np.zeros(len(unique), bool)
        for row, (raw_id, artist, title, own_id) in enumerate(unique):
            spotify_id = spotify_id_of(raw_id)
            key = None if spotify_id is not None else self._key(artist, title)
            if spotify_id is not None:
                track_id[row], by_id[row] = spotify_id, spotify_id in self.catalog_ids
            elif key is not None and key in self.by_key:
                track_id[row], by_name[row] = self.by_key[key], True
            elif isinstance(own_id, str) and own_id:
                track_id[row] = own_id
            elif key is not None:
                track_id[row] = "ext:" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
            else:
                track_id[row] = None
        track_id, by_id, by_name = track_id[codes], by_id[codes], by_name[codes]
        return MatchResult(track_id, by_id | by_name, by_id, by_name)
