"""Reader of Last.fm scrobble TSVs: Last.fm-1K and LFM-1b listening events.

Where it sits: rl/feedback/importers/history.py calls ``read_lastfm`` per file.

Layouts (tab-separated, no header; detected per line by the number of fields):
Last.fm-1K ``userid-timestamp-artid-artname-traid-traname.tsv``, 6 fields:
    user id, timestamp (ISO 8601 UTC, "2009-05-04T23:08:57Z"), MusicBrainz artist id,
    artist name, MusicBrainz track id, track name
LFM-1b ``LFM-1b_LEs.txt``, 5 fields: user id, artist id, album id, track id,
    timestamp (Unix seconds); no names, so these tracks never match the catalog and
    get the id ``lfm1b:<track id>``.
A scrobble is only sent after a track played for 30 s and half its length (or 4 min),
so every row is a stream; Last.fm records neither play time nor skips (``skipped`` and
``ms_played`` are null). The user id is pseudonymised by the importer.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from rl.feedback.importers.parsing import (
    ParsedChunk,
    epoch_seconds,
    parse_line_chunks,
    quarantine_records,
)

LINES_PER_CHUNK = 200_000
FIELDS_1K = ("user", "timestamp", "artist_mbid", "artist", "track_mbid", "title")
FIELDS_1B = ("user", "artist_id", "album_id", "track_id", "timestamp")


def _parse(lines: list[str], first: int, name: str) -> ParsedChunk:
    split = [line.split("\t") for line in lines]
    n_fields = np.array([len(parts) for parts in split])
    is_1k, is_1b = n_fields == 6, n_fields == 5
    padded = [parts if len(parts) == 6 else (parts + [""] * 6)[:6] for parts in split]
    raw = pd.DataFrame(padded, columns=list(FIELDS_1K), dtype=object)
    raw["_index"] = np.arange(first, first + len(lines))
    iso = pd.to_datetime(raw["timestamp"].where(is_1k), utc=True, errors="coerce", format="ISO8601")
    unix = pd.to_numeric(raw["track_mbid"].where(is_1b), errors="coerce")  # field 5 of LFM-1b
    timestamp = np.where(
        is_1k, epoch_seconds(iso), unix.fillna(-1).to_numpy(np.float64).astype(np.int64)
    )
    user = raw["user"].str.strip()
    title = np.where(is_1k, raw["title"].str.strip(), None)
    artist = np.where(is_1k, raw["artist"].str.strip(), None)
    # LFM-1b tracks are ids only (field 4, parsed into the "artist" slot of the padding).
    track_1b = np.where(
        is_1b & (raw["artist"].str.strip() != ""), "lfm1b:" + raw["artist"].str.strip(), None
    )
    reasons = [
        (~(is_1k | is_1b), "expected 6 (Last.fm-1K) or 5 (LFM-1b) tab-separated fields"),
        ((is_1k | is_1b) & (timestamp < 0), "timestamp missing or unparseable"),
        ((is_1k | is_1b) & (user == "").to_numpy(), "user id is empty"),
        (
            is_1k
            & ((raw["title"].str.strip() == "") | (raw["artist"].str.strip() == "")).to_numpy(),
            "artist or track name is empty",
        ),
        (is_1b & pd.isna(track_1b), "track id is empty"),
    ]
    parsed = pd.DataFrame(
        {
            "user_key": user,
            "timestamp": timestamp,
            "ms_played": np.nan,
            "skipped": None,
            "spotify_id": None,
            "artist": artist,
            "title": title,
            "reason_start": None,
            "reason_end": None,
            "shuffle": None,
            "kind": "track",
            "incognito": False,
            "own_id": track_1b,
        }
    )
    raw_view = raw.drop(columns=["user"])  # the quarantine never holds the user id
    return quarantine_records(parsed, raw_view, reasons, name, [], len(lines))


def read_lastfm(path: str, lines_per_chunk: int = LINES_PER_CHUNK) -> Iterator[ParsedChunk]:
    return parse_line_chunks(path, _parse, lines_per_chunk)
