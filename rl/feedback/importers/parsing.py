"""What every history reader returns: parsed plays in one column layout, and the source
rows it could not use, each with its reason.

Where it sits: the format readers (spotify.py, lastfm.py, listenbrainz.py, mssd.py) build
``ParsedChunk``s; rl/feedback/importers/history.py matches, sessionises and writes them.

Parsed columns (one row per play, pandas):
    user_key     str     the source's user (pseudonymised by the importer, never written)
    timestamp    int64   seconds since the epoch (UTC) the source records for the play
    ms_played    float64 play time, NaN when the source has none
    skipped      object  True/False, None when the source records no skip
    spotify_id   object  a Spotify track URI/URL/id or None
    artist, title        object  names for matching, or None
    reason_start, reason_end, shuffle   object  Spotify's codes/flag, or None
    kind         str     "track", "episode" or "audiobook"
    incognito    bool    Spotify's private-session flag
Readers holding sessions already (MSSD) add ``session_key`` and ``position``; readers
whose tracks have ids of the source only (LFM-1b, MSSD) add ``own_id``.

A quarantined source row keeps only the fields the reader reads, all of which are
non-identifying by construction (each reader's docstring lists them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rl.feedback.schema import Rejection

PARSED_COLUMNS = (
    "user_key", "timestamp", "ms_played", "skipped", "spotify_id", "artist", "title",
    "reason_start", "reason_end", "shuffle", "kind", "incognito",
)  # fmt: skip


@dataclass
class ParsedChunk:
    plays: pd.DataFrame  # PARSED_COLUMNS (+ session_key, position)
    rejections: list[Rejection] = field(default_factory=list)
    source_rows: int = 0
    bytes_read: int = 0  # of the file, for the progress bar (0: the whole file)


def iter_line_chunks(path: str, lines_per_chunk: int) -> Iterator[tuple[list[str], int, int]]:
    """(lines without their newline, 0-based number of the first, bytes read) per chunk:
    a text file read a chunk at a time, never whole."""
    with open(path, "rb") as handle:
        first, lines = 0, []
        for raw in handle:
            lines.append(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
            if len(lines) == lines_per_chunk:
                yield lines, first, handle.tell()
                first, lines = first + len(lines), []
        if lines:
            yield lines, first, handle.tell()


def parse_line_chunks(
    path: str, parse: Callable[[list[str], int, str], ParsedChunk], lines_per_chunk: int
) -> Iterator[ParsedChunk]:
    """A line-per-play text file (Last.fm TSV, ListenBrainz JSON lines) a chunk at a time:
    ``parse(non-blank lines, number of the chunk's first line, file name)`` per chunk, with
    ``bytes_read`` set for the progress bar."""
    name = os.path.basename(path)
    for lines, first, bytes_read in iter_line_chunks(path, lines_per_chunk):
        chunk = parse([line for line in lines if line.strip()], first, name)
        chunk.bytes_read = bytes_read
        yield chunk


def epoch_seconds(times: pd.Series) -> np.ndarray:
    """(n,) int64 seconds since the epoch of tz-aware datetimes; -1 where missing."""
    values = times.to_numpy(dtype="datetime64[ns]") if len(times) else np.zeros(0, "datetime64[ns]")
    seconds = values.astype("datetime64[s]").astype(np.int64)
    return np.where(pd.isna(times).to_numpy(), -1, seconds)


def json_safe(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def quarantine_records(
    parsed: pd.DataFrame,
    raw: pd.DataFrame,
    reasons: list[tuple[np.ndarray, str]],
    file_name: str,
    already_bad: list[Rejection],
    source_rows: int,
) -> ParsedChunk:
    """Split ``parsed`` by the (bad-mask, reason) checks: good rows stay, each bad row
    becomes a Rejection holding the reader's (non-identifying) raw fields and every reason."""
    bad = np.zeros(len(parsed), bool)
    for mask, _ in reasons:
        bad |= mask
    rejections = list(already_bad)
    raw_fields = [column for column in raw.columns if column != "_index"]
    for row in np.flatnonzero(bad):
        why = "; ".join(reason for mask, reason in reasons if mask[row])
        record = {name: json_safe(raw.iloc[row][name]) for name in raw_fields}
        index = int(raw.iloc[row]["_index"]) if "_index" in raw.columns else int(row)
        rejections.append(Rejection(row={"file": file_name, "index": index} | record, reason=why))
    return ParsedChunk(parsed.loc[~bad].reset_index(drop=True), rejections, source_rows)
