"""Reading a feedback log into one frame of listening events, for rl/evaluation/log_stats.py.

Where it sits: the reader half of `encore log-stats`. Each of a log's datasets
(rl/feedback/log.py layout: decision rows of the simulator or the service, play rows of an
imported history, organic per-day sums) has a converter to the same event columns
(``EVENT_COLUMNS``); ``load_events`` reads a log that fits in memory, and log_stats' Ray Data
shell maps the same converters over parquet blocks. The definitions of a play, a skip and a
stream are in log_stats' docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

EVENT_COLUMNS = (
    "user_id", "day", "timestamp", "session_id", "position", "track_id", "skipped",
    "streamed", "recommended", "count",
)  # fmt: skip

_DECISION_COLUMNS = [
    "user_id",
    "day",
    "timestamp",
    "session_id",
    "position",
    "chosen_track_id",
    "skip_level",
    "listened",
]
_PLAY_COLUMNS = [
    "user_id",
    "day",
    "timestamp",
    "session_id",
    "position",
    "track_id",
    "skipped",
    "streamed",
]
_ORGANIC_COLUMNS = ["user_id", "day", "track_id", "streams"]


def decision_events(table: Any) -> pd.DataFrame:
    """Decision rows (pyarrow) -> events: recommended plays, skip = skip level <= 1."""
    frame = table.to_pandas()
    return pd.DataFrame(
        {
            "user_id": frame["user_id"], "day": frame["day"].astype(np.int64),
            "timestamp": frame["timestamp"].astype(np.float64), "session_id": frame["session_id"],
            "position": frame["position"].astype(np.int64), "track_id": frame["chosen_track_id"],
            "skipped": (frame["skip_level"] <= 1).astype(np.float64),
            "streamed": frame["listened"].astype(bool), "recommended": True, "count": 1,
        }
    )  # fmt: skip


def play_events(table: Any) -> pd.DataFrame:
    """Play rows of an imported history -> events: organic plays, skip as recorded."""
    frame = table.to_pandas()
    skipped = frame["skipped"].map({True: 1.0, False: 0.0}).astype(np.float64)
    return pd.DataFrame(
        {
            "user_id": frame["user_id"], "day": frame["day"].astype(np.int64),
            "timestamp": frame["timestamp"].astype(np.float64), "session_id": frame["session_id"],
            "position": frame["position"].astype(np.int64), "track_id": frame["track_id"],
            "skipped": skipped, "streamed": frame["streamed"].astype(bool),
            "recommended": False, "count": 1,
        }
    )  # fmt: skip


def organic_events(table: Any) -> pd.DataFrame:
    """Organic per-day rows -> events: ``streams`` streams each, no session, no skip."""
    frame = table.to_pandas()
    n = len(frame)
    return pd.DataFrame(
        {
            "user_id": frame["user_id"], "day": frame["day"].astype(np.int64),
            "timestamp": np.full(n, np.nan), "session_id": pd.Series([None] * n, dtype=object),
            "position": np.full(n, -1, np.int64), "track_id": frame["track_id"],
            "skipped": np.full(n, np.nan), "streamed": True, "recommended": False,
            "count": frame["streams"].astype(np.int64),
        }
    )  # fmt: skip


def _files(log_uri: str) -> dict[str, list[str]]:
    from rl.feedback.log import decisions_uri, organic_uri, plays_uri
    from rl.longterm.listen_days import parquet_files

    files = {
        "decisions": parquet_files(decisions_uri(log_uri)),
        "plays": parquet_files(plays_uri(log_uri)),
        "organic": parquet_files(organic_uri(log_uri)),
    }
    if files["plays"]:
        # An imported log writes its plays twice: per play, and summed per day as organic
        # rows for the long-term readers; the plays are the complete record.
        files["organic"] = []
    if not any(files.values()):
        raise FileNotFoundError(f"no decision, play or organic parquet files under {log_uri}")
    return files


_READERS = {
    "decisions": (_DECISION_COLUMNS, decision_events),
    "plays": (_PLAY_COLUMNS, play_events),
    "organic": (_ORGANIC_COLUMNS, organic_events),
}


def load_events(log_uri: str) -> pd.DataFrame:
    """Every event of a log in one frame (for logs that fit in memory)."""
    import pyarrow.parquet as pq

    from rl import storage

    filesystem, _ = storage.resolve(log_uri)
    parts = [
        convert(pq.read_table(path, columns=columns, filesystem=filesystem))
        for dataset, paths in _files(log_uri).items()
        for columns, convert in [_READERS[dataset]]
        for path in paths
    ]
    parts = [part for part in parts if len(part)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EVENT_COLUMNS)


def _count_rows(paths: list[str], filesystem: Any) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(filesystem.open_input_file(p)).metadata.num_rows for p in paths)
