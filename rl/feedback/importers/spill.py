"""Parsed plays spilled to disk by user, so a history larger than memory can be sessionised.

Where it sits: rl/feedback/importers/history.py adds each parsed chunk (users already
pseudonymised) and then reads back one bucket of users at a time: a bucket holds every
play of its users, so sorting and cutting sessions per bucket is exact, and memory holds
one chunk or one bucket, never the whole history (a Last.fm-1K file has 19 M scrobbles).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SPILL_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()), ("timestamp", pa.int64()), ("track_id", pa.string()),
        ("in_catalog", pa.bool_()), ("ms_played", pa.float64()), ("streamed", pa.bool_()),
        ("skipped", pa.bool_()), ("shuffle", pa.bool_()), ("reason_start", pa.string()),
        ("reason_end", pa.string()), ("source", pa.string()),
    ]
)  # fmt: skip


class UserBuckets:
    """Plays hashed by user into ``buckets`` folders of parquet parts under a temp dir."""

    def __init__(self, buckets: int, parent: str | None = None) -> None:
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets}")
        self.buckets = buckets
        self.root = tempfile.mkdtemp(prefix="encore-import-", dir=parent)
        self.parts = 0
        self.min_timestamp: int | None = None

    def add(self, plays: pd.DataFrame) -> None:
        if plays.empty:
            return
        low = int(plays["timestamp"].min())
        self.min_timestamp = low if self.min_timestamp is None else min(self.min_timestamp, low)
        hashes = pd.util.hash_pandas_object(plays["user_id"], index=False).to_numpy()
        bucket = hashes % self.buckets
        for number in np.unique(bucket):
            part = plays.loc[bucket == number]
            table = pa.table(
                {
                    field.name: pa.array(
                        part[field.name].to_numpy(dtype=object), type=field.type, from_pandas=True
                    )
                    for field in SPILL_SCHEMA
                },
                schema=SPILL_SCHEMA,
            )
            folder = os.path.join(self.root, f"bucket={int(number)}")
            os.makedirs(folder, exist_ok=True)
            pq.write_table(table, os.path.join(folder, f"part-{self.parts:06d}.parquet"))
            self.parts += 1

    def __iter__(self) -> Iterator[pd.DataFrame]:
        """Each bucket's plays (every play of its users), in bucket order."""
        for number in range(self.buckets):
            folder = os.path.join(self.root, f"bucket={number}")
            if os.path.isdir(folder):
                table = pq.read_table(folder, schema=SPILL_SCHEMA, partitioning=None)
                yield table.to_pandas()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
