"""Reader of ListenBrainz listens as JSON lines (the public listens dumps' ``.listens``
files and a user's own export, one listen object per line).

Where it sits: rl/feedback/importers/history.py calls ``read_listenbrainz`` per file.

Fields read: ``listened_at`` (Unix seconds, or an ISO time), the user (``user_name`` or
``user_id``; pseudonymised by the importer, never written, never quarantined),
``track_metadata.artist_name``, ``track_metadata.track_name`` and from
``track_metadata.additional_info``: ``spotify_id`` (an open.spotify.com track URL, used
for matching) and ``duration_ms`` / ``duration`` (the track's length, not the play time:
not used). ListenBrainz, like Last.fm, takes a listen after 30 s or half the track, so
each line is a stream; it records no skips and no play time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from rl.feedback.importers.parsing import (
    ParsedChunk,
    epoch_seconds,
    parse_line_chunks,
    quarantine_records,
)

LINES_PER_CHUNK = 100_000


def _listen_fields(line: str) -> tuple[dict[str, Any], str | None]:
    """The reader's fields of one line, or why the line is unusable."""
    try:
        listen = json.loads(line)
    except json.JSONDecodeError as exc:
        return {}, f"line is not valid JSON: {exc.msg}"
    if not isinstance(listen, dict):
        return {}, "line is not a JSON object"
    metadata = listen.get("track_metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    info = metadata.get("additional_info")
    info = info if isinstance(info, dict) else {}
    user = listen.get("user_name", listen.get("user_id"))
    return {
        "user": None if user is None else str(user),
        "listened_at": listen.get("listened_at"),
        "artist_name": metadata.get("artist_name"),
        "track_name": metadata.get("track_name"),
        "spotify_id": info.get("spotify_id"),
    }, None


def _timestamps(values: pd.Series) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce")
    iso = pd.to_datetime(values.where(numeric.isna()), utc=True, errors="coerce", format="ISO8601")
    return np.where(
        numeric.notna(), numeric.fillna(-1).to_numpy(np.float64), epoch_seconds(iso)
    ).astype(np.int64)


def _parse(lines: list[str], first: int, name: str) -> ParsedChunk:
    fields, errors = (
        zip(*(_listen_fields(line) for line in lines), strict=True) if lines else ((), ())
    )
    raw = pd.DataFrame(
        list(fields),
        columns=["user", "listened_at", "artist_name", "track_name", "spotify_id"],
        dtype=object,
    )
    raw["_index"] = np.arange(first, first + len(lines))
    error = np.array([e is not None for e in errors], bool)
    timestamp = _timestamps(raw["listened_at"])
    text = {
        c: raw[c].map(lambda v: v.strip() if isinstance(v, str) else "")
        for c in ("artist_name", "track_name")
    }
    reasons = [
        (error, "line is not a JSON object (a listen)"),
        (~error & (timestamp < 0), "listened_at missing or unparseable"),
        (~error & raw["user"].isna().to_numpy(), "no user_name or user_id"),
        (
            ~error & ((text["artist_name"] == "") | (text["track_name"] == "")).to_numpy(),
            "artist_name or track_name missing",
        ),
    ]
    parsed = pd.DataFrame(
        {
            "user_key": raw["user"],
            "timestamp": timestamp,
            "ms_played": np.nan,
            "skipped": None,
            "spotify_id": raw["spotify_id"].map(lambda v: v if isinstance(v, str) else None),
            "artist": text["artist_name"],
            "title": text["track_name"],
            "reason_start": None,
            "reason_end": None,
            "shuffle": None,
            "kind": "track",
            "incognito": False,
        }
    )
    return quarantine_records(parsed, raw.drop(columns=["user"]), reasons, name, [], len(lines))


def read_listenbrainz(path: str, lines_per_chunk: int = LINES_PER_CHUNK) -> Iterator[ParsedChunk]:
    return parse_line_chunks(path, _parse, lines_per_chunk)
