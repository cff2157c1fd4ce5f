"""Readers of Spotify's own exports: the account-data ``StreamingHistory*.json`` and the
extended streaming history (``endsong_*.json``, ``Streaming_History_Audio_*.json``).

Where it sits: rl/feedback/importers/history.py calls ``read_spotify`` or
``read_spotify_extended`` per file and turns the parsed plays into log rows.

Only these fields are ever read from a record (everything else, ``ip_addr``,
``username``, ``conn_country``, ``platform``, ``user_agent_decrypted``,
``offline_timestamp`` included, is never touched, so it cannot reach the log or the
quarantine):

extended  ts (end of the play, UTC), ms_played, spotify_track_uri,
          master_metadata_track_name, master_metadata_album_artist_name,
          spotify_episode_uri, audiobook_uri / audiobook_chapter_uri (to recognise
          non-music), reason_start, reason_end, shuffle, skipped, incognito_mode
basic     endTime ("YYYY-MM-DD HH:MM", UTC), artistName, trackName, msPlayed;
          podcastName / episodeName mark a podcast record (the ``_podcast_`` files)

An export belongs to one listener: every file of one import is one user, named by the
importer's ``user_name`` (default "spotify-listener"), never by the account name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rl.feedback.importers.parsing import ParsedChunk, epoch_seconds, quarantine_records
from rl.feedback.schema import Rejection

EXTENDED_FIELDS = (
    "ts", "ms_played", "spotify_track_uri", "master_metadata_track_name",
    "master_metadata_album_artist_name", "spotify_episode_uri", "audiobook_uri",
    "audiobook_chapter_uri", "reason_start", "reason_end", "shuffle", "skipped",
    "incognito_mode",
)  # fmt: skip
BASIC_FIELDS = ("endTime", "artistName", "trackName", "msPlayed", "podcastName", "episodeName")
#: reason_end codes that end a play because the listener moved on: exactly the plays that
#: the extended history marks ``skipped`` (checked on the shared real history: 1,638 of
#: 1,638), used when ``skipped`` is missing (older exports leave it null).
SKIP_REASONS = frozenset({"fwdbtn", "backbtn", "endplay"})


def _load_records(path: str) -> tuple[list[Any], list[Rejection]]:
    """The file's JSON array, or ([], one rejection saying why the file is unusable)."""
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [], [Rejection({"file": name}, f"file is not valid JSON: {exc}")]
    if not isinstance(records, list):
        return [], [Rejection({"file": name}, "file is not a JSON array of plays")]
    return records, []


def _split_non_dicts(
    records: list[Any], name: str, fields: tuple[str, ...]
) -> tuple[pd.DataFrame, list[Rejection]]:
    """Only the reader's fields of each object record; non-objects are rejected."""
    rows, bad = [], []
    for index, record in enumerate(records):
        if isinstance(record, dict):
            rows.append({field: record.get(field) for field in fields} | {"_index": index})
        else:
            bad.append(Rejection({"file": name, "index": index}, "record is not a JSON object"))
    return pd.DataFrame(rows, columns=[*fields, "_index"], dtype=object), bad


def _strings(values: pd.Series) -> pd.Series:
    return values.where(values.map(lambda value: isinstance(value, str)), None)


def _bool_or_none(values: pd.Series) -> np.ndarray:
    return np.array([value if isinstance(value, bool) else None for value in values], dtype=object)


@dataclass
class _Export:
    """One export file's records as a frame, with the play time and duration parsed and
    the rejections every Spotify export shares (unreadable time, missing duration)."""

    name: str
    frame: pd.DataFrame
    bad: list[Rejection]
    n_records: int
    timestamp: pd.Series
    ms_played: pd.Series
    reasons: list[tuple[np.ndarray, str]]

    def quarantined(
        self, parsed: pd.DataFrame, reasons: list[tuple[np.ndarray, str]]
    ) -> ParsedChunk:
        return quarantine_records(
            parsed, self.frame, [*self.reasons, *reasons], self.name, self.bad, self.n_records
        )


def _load_export(
    path: str,
    fields: tuple[str, ...],
    time_field: str,
    time_format: str,
    time_rule: str,
    ms_field: str,
) -> _Export:
    name = os.path.basename(path)
    records, bad = _load_records(path)
    frame, more = _split_non_dicts(records, name, fields)
    timestamp = pd.to_datetime(frame[time_field], utc=True, errors="coerce", format=time_format)
    ms_played = pd.to_numeric(frame[ms_field], errors="coerce")
    reasons = [
        (timestamp.isna().to_numpy(), f"{time_field} missing or not {time_rule}"),
        ((ms_played.isna() | (ms_played < 0)).to_numpy(), f"{ms_field} missing or negative"),
    ]
    return _Export(name, frame, bad + more, len(records), timestamp, ms_played, reasons)


def read_spotify_extended(path: str, user_name: str) -> ParsedChunk:
    export = _load_export(path, EXTENDED_FIELDS, "ts", "ISO8601", "an ISO time", "ms_played")
    frame, timestamp, ms_played = export.frame, export.timestamp, export.ms_played
    has_track = frame["spotify_track_uri"].notna() | frame["master_metadata_track_name"].notna()
    kind = np.select(
        [
            frame["spotify_episode_uri"].notna().to_numpy(),
            (frame["audiobook_uri"].notna() | frame["audiobook_chapter_uri"].notna()).to_numpy(),
            has_track.to_numpy(),
        ],
        ["episode", "audiobook", "track"],
        default="",
    )
    reasons = [(kind == "", "no track, episode or audiobook in the record")]
    skipped = _bool_or_none(frame["skipped"])
    reason_end = _strings(frame["reason_end"])
    # Older exports leave `skipped` null: derive it from reason_end, else from a short play.
    missing = np.array([value is None for value in skipped], dtype=bool)
    from_reason = missing & reason_end.notna().to_numpy()
    skipped[from_reason] = reason_end.isin(SKIP_REASONS).to_numpy()[from_reason]
    from_time = missing & ~from_reason & ms_played.notna().to_numpy()
    skipped[from_time] = (ms_played < 30_000).to_numpy()[from_time]
    parsed = pd.DataFrame(
        {
            "user_key": user_name,
            "timestamp": epoch_seconds(timestamp),
            "ms_played": ms_played.to_numpy(dtype=np.float64),
            "skipped": skipped,
            "spotify_id": _strings(frame["spotify_track_uri"]),
            "artist": _strings(frame["master_metadata_album_artist_name"]),
            "title": _strings(frame["master_metadata_track_name"]),
            "reason_start": _strings(frame["reason_start"]),
            "reason_end": reason_end,
            "shuffle": _bool_or_none(frame["shuffle"]),
            "kind": kind,
            "incognito": frame["incognito_mode"].map(lambda v: v is True).to_numpy(bool),
        }
    )
    return export.quarantined(parsed, reasons)


def read_spotify_basic(path: str, user_name: str) -> ParsedChunk:
    export = _load_export(
        path, BASIC_FIELDS, "endTime", "%Y-%m-%d %H:%M", "'YYYY-MM-DD HH:MM'", "msPlayed"
    )
    frame, timestamp, ms_played = export.frame, export.timestamp, export.ms_played
    is_podcast = (frame["podcastName"].notna() | frame["episodeName"].notna()).to_numpy()
    has_track = (frame["trackName"].notna() & frame["artistName"].notna()).to_numpy()
    kind = np.select([is_podcast, has_track], ["episode", "track"], default="")
    reasons = [(kind == "", "no artistName/trackName or podcast in the record")]
    parsed = pd.DataFrame(
        {
            "user_key": user_name,
            "timestamp": epoch_seconds(timestamp),
            "ms_played": ms_played.to_numpy(dtype=np.float64),
            # The basic export records no skip: a play shorter than a stream counts as one.
            "skipped": np.where(ms_played.isna(), None, (ms_played < 30_000).to_numpy()),
            "spotify_id": None,
            "artist": _strings(frame["artistName"]),
            "title": _strings(frame["trackName"]),
            "reason_start": None,
            "reason_end": None,
            "shuffle": None,
            "kind": kind,
            "incognito": False,
        },
        index=frame.index,
    )
    return export.quarantined(parsed, reasons)
