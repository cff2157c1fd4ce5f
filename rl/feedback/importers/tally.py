"""What an import of listening histories counts and reports (rl/feedback/importers/history.py).

``ImportTally`` is filled as chunks are read and slices written; ``import_summary`` turns
it, with the log writer's own counts, into <log>/import_summary.json, and
``format_summary`` into the lines `encore import-history` prints.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rl.feedback.log import FeedbackLogWriter

if TYPE_CHECKING:
    from rl.feedback.importers.history import ImportConfig


@dataclass
class ImportTally:
    """Counts for the summary: what was read, filled as chunks pass, and what was written,
    slice by slice (slices never split a user)."""

    source_rows: int = 0
    by_spotify_id: int = 0
    by_name: int = 0
    unmatched: int = 0
    duplicates: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    files: int = 0
    streams: int = 0
    users: int = 0
    sessions: int = 0
    active_user_days: int = 0
    first_day: int | None = None
    last_day: int | None = None

    def add_written(self, plays: pd.DataFrame, day_zero: int) -> None:
        day = plays["timestamp"].to_numpy(np.int64) // 86_400 - day_zero
        self.streams += int(plays["streamed"].sum())
        self.users += int(plays["user_id"].nunique())
        self.sessions += int(plays["session_id"].nunique())
        self.active_user_days += int(
            pd.DataFrame({"u": plays["user_id"], "d": day}).drop_duplicates().shape[0]
        )
        if len(day):
            low, high = int(day.min()), int(day.max())
            self.first_day = low if self.first_day is None else min(self.first_day, low)
            self.last_day = high if self.last_day is None else max(self.last_day, high)


def import_summary(
    paths: Sequence[str],
    formats: Sequence[str],
    config: ImportConfig,
    tally: ImportTally,
    writer: FeedbackLogWriter,
    log_uri: str,
) -> dict[str, Any]:
    """What `encore import-history` prints and writes to <log>/import_summary.json."""
    matched = tally.by_spotify_id + tally.by_name
    considered = matched + tally.unmatched
    first, last = tally.first_day, tally.last_day
    span = 0 if first is None or last is None else last - first + 1
    return {
        "log": log_uri,
        "files": [os.path.basename(path) for path in paths],
        "formats": sorted(set(formats)),
        "config": {"session_gap_s": config.session_gap_s, "drop_incognito": config.drop_incognito},
        "source_rows": tally.source_rows,
        "plays_written": writer.written_play_rows,
        "organic_rows_written": writer.written_organic_rows,
        "streams": tally.streams,
        "users": tally.users,
        "sessions": tally.sessions,
        "days_spanned": span,
        "active_user_days": tally.active_user_days,
        "catalog_match": {
            "by_spotify_id": tally.by_spotify_id,
            "by_artist_title": tally.by_name,
            "unmatched": tally.unmatched,
            "match_rate": matched / considered if considered else 0.0,
        },
        "dropped": dict(tally.dropped),
        "exact_duplicate_plays": tally.duplicates,
        "quarantined": writer.quarantined_rows,
        "quarantine_reasons": dict(writer.quarantine_reasons),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as the lines `encore import-history` prints."""
    match = summary["catalog_match"]
    lines = [
        f"{summary['source_rows']:,} source rows from {len(summary['files'])} file(s) "
        f"({', '.join(summary['formats'])}) -> {summary['plays_written']:,} plays "
        f"({summary['streams']:,} streams >= 30 s), {summary['organic_rows_written']:,} organic rows",
        f"users {summary['users']:,}, sessions {summary['sessions']:,}, "
        f"days spanned {summary['days_spanned']:,}, active user-days {summary['active_user_days']:,}",
        f"catalog match {match['match_rate']:.1%} of plays "
        f"(by Spotify id {match['by_spotify_id']:,}, by artist + title {match['by_artist_title']:,}, "
        f"unmatched {match['unmatched']:,}: kept for activity, sessions and return days)",
    ]
    dropped = ", ".join(
        f"{reason} {count:,}" for reason, count in summary["dropped"].items() if count
    )
    lines.append(f"dropped: {dropped or 'none'}")
    if summary["exact_duplicate_plays"] and "duplicate play" not in summary["dropped"]:
        lines.append(
            f"{summary['exact_duplicate_plays']:,} exact duplicate plays kept (--drop-duplicates drops them)"
        )
    if summary["quarantined"]:
        reasons = ", ".join(f"{r} ({c})" for r, c in summary["quarantine_reasons"].items())
        lines.append(
            f"QUARANTINED {summary['quarantined']:,} rows under {summary['log']}/quarantine: {reasons}"
        )
    else:
        lines.append("quarantined: none")
    return "\n".join(lines)
