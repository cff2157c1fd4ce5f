"""Importing real listening histories into the feedback log (`encore import-history`).

Where it sits: format readers (spotify.py, lastfm.py, listenbrainz.py, mssd.py) parse
files into ``ParsedChunk``s; this module drops what is not music, pseudonymises users,
matches tracks to the catalog (matching.py), cuts sessions, and writes play rows plus
their organic per-day sums through ``FeedbackLogWriter``; unusable rows go to the log's
quarantine with their reason. rl/evaluation/log_stats.py reads the result.

Decisions (documented in the README's "Real listening histories" section):
- Every imported play is organic: none of these sources records which tracks a
  recommender chose among candidates, so no decision rows are written.
- Podcast episodes and audiobook chapters are dropped (counted in the summary): the
  catalog, the models and the figures are about music.
- Users become pseudonyms in order of first appearance (``<format>:u000001``); the
  source's user names and ids are never written. A Spotify export is one listener.
- Sessions: a play starts a new session when more than ``session_gap_s`` (30 min)
  passed since the previous play's timestamp (as the shared history's figures are
  measured). Day 0 is the earliest UTC date in the import.
- Scale: readers yield chunks; parsed plays are spilled to disk by user bucket
  (spill.py) and sessionised one bucket at a time; MSSD chunks, whose sessions are whole,
  go straight to the log.
- A stream is a play of >= 30 s (sources without play time, i.e. scrobbles, only
  record streams); a skip is the source's own flag or derived as each reader documents.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rl import storage
from rl.config_checks import require_at_least
from rl.feedback.importers.matching import CatalogMatcher
from rl.feedback.importers.parsing import ParsedChunk
from rl.feedback.importers.spill import UserBuckets
from rl.feedback.importers.tally import ImportTally, import_summary
from rl.feedback.log import PLAYS_DIR, FeedbackLogWriter
from rl.feedback.rows import organic_from_plays, play_table
from rl.feedback.schema import Rejection

FORMATS = ("spotify", "spotify-extended", "lastfm", "listenbrainz", "mssd")
STREAM_MS = 30_000
DUPLICATE_KEY = ["user_id", "timestamp", "track_id", "ms_played"]


@dataclass(frozen=True)
class ImportConfig:
    """How `encore import-history` reads and cuts a history."""

    session_gap_s: int = 1_800
    """A gap longer than this (seconds) between two plays starts a new session. >= 1."""
    user_name: str = "spotify-listener"
    """The pseudonym of the one listener of a Spotify export (Spotify formats only)."""
    drop_incognito: bool = False
    """Drop plays of Spotify private sessions (kept by default: the shared history's
    figures include its 6 such plays)."""
    drop_duplicates: bool = False
    """Drop exact repeats (same user, time, track and play time), which overlapping export
    files produce. Off by default: the shared history holds 10 such rows and its
    published figures count them; the summary reports how many there are either way."""
    write_rows: int = 200_000
    """Play rows per write (bounds the memory of one write)."""
    user_buckets: int = 16
    """Parsed plays are spilled to disk in this many buckets of users and sessionised a
    bucket at a time, so memory holds one bucket, not the whole history. >= 1."""

    def __post_init__(self) -> None:
        require_at_least(self, 1, "session_gap_s", "write_rows", "user_buckets")
        if not self.user_name:
            raise ValueError("user_name must not be empty")


def detect_format(path: str) -> str:
    """Guess a file's format from its name, then from its first bytes."""
    name = os.path.basename(path).lower()
    if name.startswith(("endsong", "streaming_history_audio", "streaming_history_video")):
        return "spotify-extended"
    if name.startswith("streaminghistory"):
        return "spotify"
    with open(path, "rb") as handle:
        head = handle.read(4096).decode("utf-8", errors="replace").lstrip()
    if head.startswith("["):
        return "spotify-extended" if '"ts"' in head else "spotify"
    if head.startswith("{"):
        return "listenbrainz"
    first_line = head.splitlines()[0] if head else ""
    if "session_id" in first_line and "skip_1" in first_line:
        return "mssd"
    if "\t" in first_line:
        return "lastfm"
    raise ValueError(f"{path}: cannot tell its format; pass --format ({', '.join(FORMATS)})")


def read_file(path: str, file_format: str, config: ImportConfig) -> Iterator[ParsedChunk]:
    """The file's plays in chunks (one chunk for the whole-file JSON formats)."""
    from rl.feedback.importers import lastfm, listenbrainz, mssd, spotify

    if file_format == "spotify-extended":
        yield spotify.read_spotify_extended(path, config.user_name)
    elif file_format == "spotify":
        yield spotify.read_spotify_basic(path, config.user_name)
    elif file_format == "lastfm":
        yield from lastfm.read_lastfm(path)
    elif file_format == "listenbrainz":
        yield from listenbrainz.read_listenbrainz(path)
    elif file_format == "mssd":
        yield from mssd.read_mssd_plays(path)
    else:
        raise ValueError(f"unknown format {file_format!r}; one of {FORMATS}")


def check_output_is_new(log_uri: str) -> None:
    if storage.exists(log_uri) and storage.list_dir(log_uri):
        raise FileExistsError(
            f"{log_uri} is not empty: import into a new folder (a log holds one history)"
        )


class _Pseudonyms:
    """Source user -> '<format>:u000001', in order of first appearance (never written back)."""

    def __init__(self) -> None:
        self.codes: dict[tuple[str, str], str] = {}

    def __call__(self, file_format: str, users: pd.Series) -> np.ndarray:
        out = np.empty(len(users), dtype=object)
        for value in pd.unique(users):
            key = (file_format.split("-")[0], str(value))
            if key not in self.codes:
                self.codes[key] = f"{key[0]}:u{len(self.codes) + 1:06d}"
        mapping = {
            value: self.codes[(file_format.split("-")[0], str(value))] for value in pd.unique(users)
        }
        out[:] = users.map(mapping).to_numpy(dtype=object)
        return out


def _prepare(
    chunk: ParsedChunk,
    file_format: str,
    config: ImportConfig,
    matcher: CatalogMatcher,
    pseudonyms: _Pseudonyms,
    tally: ImportTally,
    quarantine: Callable[[list[Rejection]], None],
) -> pd.DataFrame:
    """Drop non-music, pseudonymise, match: the chunk's plays in the compact layout."""
    tally.source_rows += chunk.source_rows
    quarantine(chunk.rejections)
    plays = chunk.plays
    for kind, label in (("episode", "podcast episode"), ("audiobook", "audiobook chapter")):
        if (plays["kind"] == kind).any():
            tally.dropped[label] += int((plays["kind"] == kind).sum())
    plays = plays[plays["kind"] == "track"]
    if config.drop_incognito:
        if plays["incognito"].any():
            tally.dropped["private session (incognito)"] += int(plays["incognito"].sum())
        plays = plays[~plays["incognito"].astype(bool)]
    match = matcher.match(plays["spotify_id"], plays["artist"], plays["title"], plays.get("own_id"))
    no_track = pd.isna(match.track_id)
    if no_track.any():
        quarantine(
            [
                Rejection(
                    {"format": file_format, "timestamp": int(t)},
                    "no track id and no artist + title",
                )
                for t in plays["timestamp"].to_numpy()[no_track]
            ]
        )
    tally.by_spotify_id += int(match.by_spotify_id.sum())
    tally.by_name += int(match.by_name.sum())
    tally.unmatched += int((~match.in_catalog & ~no_track).sum())
    keep = ~no_track
    ms_played = plays["ms_played"].to_numpy(dtype=np.float64)[keep]
    compact = pd.DataFrame(
        {
            # MSSD has no users (a session stands for one; see _mssd_sessions): no pseudonym
            # table, which would grow with every one of its millions of sessions.
            "user_id": plays["user_key"].to_numpy(dtype=object)[keep]
            if file_format == "mssd"
            else pseudonyms(file_format, plays["user_key"][keep]),
            "timestamp": plays["timestamp"].to_numpy(np.int64)[keep],
            "track_id": match.track_id[keep],
            "in_catalog": match.in_catalog[keep],
            "ms_played": ms_played,
            # No play time (scrobbles): the source only records streams, unless it says.
            "streamed": plays["_streamed"].to_numpy(bool)[keep]
            if "_streamed" in plays.columns
            else np.where(np.isnan(ms_played), True, ms_played >= STREAM_MS),
            "skipped": plays["skipped"].to_numpy(dtype=object)[keep],
            "shuffle": plays["shuffle"].to_numpy(dtype=object)[keep],
            "reason_start": plays["reason_start"].to_numpy(dtype=object)[keep],
            "reason_end": plays["reason_end"].to_numpy(dtype=object)[keep],
            "source": file_format,
        }
    )
    for column in ("session_key", "position"):
        if column in plays.columns:
            compact[column] = plays[column].to_numpy()[keep]
    return compact


def cut_sessions(plays: pd.DataFrame, session_gap_s: int) -> pd.DataFrame:
    """Sort by user and time; number sessions (new user or gap > session_gap_s) and positions."""
    plays = plays.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    user = plays["user_id"].to_numpy(dtype=object)
    time_s = plays["timestamp"].to_numpy(np.int64)
    new = np.ones(len(plays), bool)
    if len(plays):
        new[1:] = (user[1:] != user[:-1]) | (np.diff(time_s) > session_gap_s)
    session = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    plays["position"] = np.arange(len(plays)) - starts[session]
    first_of_user = np.ones(len(plays), bool)
    if len(plays):
        first_of_user[1:] = user[1:] != user[:-1]
    # Session numbers restart per user so ids stay stable when other users are added.
    user_first_session = np.maximum.accumulate(np.where(first_of_user, session, 0))
    number = session - user_first_session
    plays["session_id"] = [f"{u}-s{n:05d}" for u, n in zip(user, number, strict=True)]
    return plays


def _to_table(plays: pd.DataFrame, day_zero: int) -> pa.Table:
    ms = plays["ms_played"].to_numpy(np.float64)
    return play_table(
        {
            "user_id": plays["user_id"].to_numpy(dtype=object).astype(str),
            "session_id": plays["session_id"].to_numpy(dtype=object).astype(str),
            "day": (plays["timestamp"].to_numpy(np.int64) // 86_400 - day_zero).astype(np.int32),
            "position": plays["position"].to_numpy(np.int64).astype(np.int32),
            "timestamp": plays["timestamp"].to_numpy(np.int64),
            "track_id": plays["track_id"].to_numpy(dtype=object).astype(str),
            "in_catalog": plays["in_catalog"].to_numpy(bool),
            "ms_played": pa.array(
                np.where(np.isnan(ms), 0, ms).astype(np.int64), mask=np.isnan(ms)
            ),
            "streamed": plays["streamed"].to_numpy(bool),
            "skipped": _nullable(plays["skipped"], pa.bool_()),
            "shuffle": _nullable(plays["shuffle"], pa.bool_()),
            "reason_start": _nullable(plays["reason_start"], pa.string()),
            "reason_end": _nullable(plays["reason_end"], pa.string()),
            "source": plays["source"].to_numpy(dtype=object).astype(str),
        }
    )


def _nullable(values: pd.Series, value_type: pa.DataType) -> pa.Array:
    """An object column with None/NaN for missing values as a typed arrow array."""
    return pa.array(values.to_numpy(dtype=object), type=value_type, from_pandas=True)


def _write(writer: FeedbackLogWriter, plays: pd.DataFrame, day_zero: int, rows: int) -> None:
    """Write plays in slices cut where the user changes, so no (user, day) spans two slices."""
    start = 0
    user = plays["user_id"].to_numpy(dtype=object)
    while start < len(plays):
        stop = min(start + rows, len(plays))
        while stop < len(plays) and user[stop] == user[stop - 1]:
            stop += 1
        table = _to_table(plays.iloc[start:stop], day_zero)
        writer.append_plays(table)
        writer.append_organic(organic_from_plays(table))
        start = stop


def import_history(
    paths: Sequence[str],
    log_uri: str,
    file_format: str = "auto",
    config: ImportConfig | None = None,
    catalog_uri: str | None = None,
    matcher: CatalogMatcher | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Import the files at ``paths`` into a new log at ``log_uri``; returns the summary
    (also written to <log>/import_summary.json). See the module docstring."""
    from tqdm import tqdm

    config = config or ImportConfig()
    check_output_is_new(log_uri)
    if not paths:
        raise ValueError("no input files given")
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"input file(s) not found: {missing}")
    formats = [detect_format(path) if file_format == "auto" else file_format for path in paths]
    for chosen in formats:
        if chosen not in FORMATS:
            raise ValueError(f"unknown format {chosen!r}; one of {FORMATS}")
    if "mssd" in formats and len(set(formats)) > 1:
        raise ValueError("import MSSD files on their own (its sessions stand for users)")
    matcher = matcher or CatalogMatcher.from_catalog_uri(catalog_uri)
    # Write into a sibling folder and rename at the end, so a failed import leaves no
    # half-written log under the name asked for.
    target = log_uri
    if storage.is_local(log_uri):
        target = f"{log_uri.rstrip('/')}.importing-{uuid.uuid4().hex[:8]}"
    tally, pseudonyms = ImportTally(), _Pseudonyms()
    total_bytes = sum(os.path.getsize(path) for path in paths)
    with (
        FeedbackLogWriter(target, flush_rows=config.write_rows) as writer,
        tqdm(
            total=total_bytes, unit="B", unit_scale=True, desc="importing", disable=not progress
        ) as bar,
    ):

        def quarantine(rejections: list[Rejection]) -> None:
            writer.quarantine(rejections, PLAYS_DIR)

        if formats[0] == "mssd":
            from rl.feedback.importers.mssd import first_mssd_day

            day_zero = min(first_mssd_day(path) for path in paths)
        spill = UserBuckets(config.user_buckets)
        try:
            for path, chosen in zip(paths, formats, strict=True):
                tally.files += 1
                done = 0
                for chunk in read_file(path, chosen, config):
                    plays = _prepare(chunk, chosen, config, matcher, pseudonyms, tally, quarantine)
                    if chosen == "mssd":
                        plays = _mssd_sessions(plays)
                        if len(plays):
                            tally.add_written(plays, day_zero)
                            _write(writer, plays, day_zero, config.write_rows)
                    else:
                        spill.add(plays)
                    now = chunk.bytes_read or os.path.getsize(path)
                    bar.update(now - done)
                    done = now
            if spill.min_timestamp is not None:
                day_zero = spill.min_timestamp // 86_400
                for bucket in spill:
                    _sessionise_and_write(bucket, day_zero, config, tally, writer)
        finally:
            spill.close()
    if target != log_uri:
        if os.path.isdir(log_uri):
            os.rmdir(log_uri)  # empty (checked above)
        os.replace(target, log_uri)
    summary = import_summary(paths, formats, config, tally, writer, log_uri)
    storage.write_json(storage.join(log_uri, "import_summary.json"), summary)
    return summary


def _sessionise_and_write(
    plays: pd.DataFrame,
    day_zero: int,
    config: ImportConfig,
    tally: ImportTally,
    writer: FeedbackLogWriter,
) -> None:
    """One bucket of users (all their plays): sessions, duplicates, then the log."""
    plays = cut_sessions(plays, config.session_gap_s)
    duplicates = int(plays.duplicated(DUPLICATE_KEY).sum())
    tally.duplicates += duplicates
    if config.drop_duplicates and duplicates:
        plays = _drop_duplicates(plays, config.session_gap_s)
        tally.dropped["duplicate play"] += duplicates
    tally.add_written(plays, day_zero)
    _write(writer, plays, day_zero, config.write_rows)


def _mssd_sessions(plays: pd.DataFrame) -> pd.DataFrame:
    """MSSD rows carry their sessions: one session is one user (MSSD has no user ids)."""
    plays = plays.copy()
    plays["user_id"] = "mssd:" + plays["session_key"].astype(str)
    plays["session_id"] = plays["session_key"].astype(str)
    return plays.sort_values(["user_id", "position"], kind="stable").reset_index(drop=True)


def _drop_duplicates(plays: pd.DataFrame, session_gap_s: int) -> pd.DataFrame:
    kept = plays.loc[~plays.duplicated(DUPLICATE_KEY).to_numpy()]
    return cut_sessions(kept.drop(columns=["session_id", "position"]), session_gap_s)
