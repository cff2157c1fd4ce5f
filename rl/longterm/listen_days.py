"""Ray Data shell: the feedback log -> listen days (the long-term models' one input).

Where it sits: reads the decision log and the organic listens written by
``rl.feedback.log`` (parquet, ``day=N/`` partitions; contract in ``rl.feedback.schema``) with
Ray Data, keeps the listens (decisions with ``listened``, organic rows with streams >= 1),
reduces every block in parallel to distinct (user, track, day) rows with minutes and
organic/recommended flags, and hands the (much smaller) result to the numpy core
(``listen_days_from_frame``), which merges the blocks. Everything downstream
(relationship states, taste, discovery dataset) is plain numpy.

Minutes of a recommended listen = listen_fraction x the track's length
(``track_minutes``; 3.5 min when unknown, the catalog's median song length).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rl import storage
from rl.feedback.log import decisions_uri, organic_uri
from rl.longterm.relationship_history import ListenDays, listen_days_from_frame

DEFAULT_TRACK_MINUTES = 3.5

_DECISION_COLUMNS = ["user_id", "day", "chosen_track_id", "listened", "listen_fraction"]
_ORGANIC_COLUMNS = ["user_id", "day", "track_id", "minutes", "streams"]


def parquet_files(dataset_uri: str, days: Sequence[int] | None = None) -> list[str]:
    """Resolved paths of the parquet files under ``dataset_uri/day=N/`` (chosen days)."""
    if not storage.exists(dataset_uri):
        return []
    wanted = None if days is None else {f"day={int(day)}" for day in days}
    files: list[str] = []
    for name in sorted(storage.list_dir(dataset_uri)):
        if not name.startswith("day=") or (wanted is not None and name not in wanted):
            continue
        day_uri = storage.join(dataset_uri, name)
        files.extend(
            storage.resolve(storage.join(day_uri, f))[1]
            for f in sorted(storage.list_dir(day_uri))
            if f.endswith(".parquet")
        )
    return files


def _distinct_listen_days(table: pa.Table) -> pa.Table:
    """One block -> distinct (user_id, track_id, day) with summed minutes and or-ed flags."""
    grouped = table.group_by(["user_id", "track_id", "day"]).aggregate(
        [("minutes", "sum"), ("organic", "max"), ("recommended", "max")]
    )
    return grouped.rename_columns(
        ["user_id", "track_id", "day", "minutes", "organic", "recommended"]
    )


def _decision_block(track_minutes: dict[str, float] | None):
    def convert(batch: pa.Table) -> pa.Table:
        listened = batch.filter(pc.equal(batch["listened"], True))
        track = listened["chosen_track_id"]
        if track_minutes is None:
            length = pa.array(np.full(listened.num_rows, DEFAULT_TRACK_MINUTES))
        else:
            length = pa.array(
                pd.Series(track.to_numpy(zero_copy_only=False))
                .map(track_minutes)
                .fillna(DEFAULT_TRACK_MINUTES)
                .to_numpy(np.float64)
            )
        minutes = pc.multiply(listened["listen_fraction"].cast(pa.float64()), length)
        n = listened.num_rows
        return _distinct_listen_days(
            pa.table(
                {
                    "user_id": listened["user_id"],
                    "track_id": track,
                    "day": listened["day"].cast(pa.int32()),
                    "minutes": minutes,
                    "organic": pa.array(np.zeros(n, bool)),
                    "recommended": pa.array(np.ones(n, bool)),
                }
            )
        )

    return convert


def _organic_block(batch: pa.Table) -> pa.Table:
    listened = batch.filter(pc.greater_equal(batch["streams"], 1))
    n = listened.num_rows
    return _distinct_listen_days(
        pa.table(
            {
                "user_id": listened["user_id"],
                "track_id": listened["track_id"],
                "day": listened["day"].cast(pa.int32()),
                "minutes": listened["minutes"].cast(pa.float64()),
                "organic": pa.array(np.ones(n, bool)),
                "recommended": pa.array(np.zeros(n, bool)),
            }
        )
    )


def listen_days_from_log(
    log_uri: str,
    track_ids: np.ndarray | None = None,
    track_minutes: dict[str, float] | None = None,
    days: Sequence[int] | None = None,
    engine: str = "ray",
) -> ListenDays:
    """Read a feedback log and reduce it to ``ListenDays``.

    ``engine="ray"`` (the default) reads and reduces the blocks in parallel with Ray Data
    (Ray is started locally if the caller has not initialised it); ``"pyarrow"`` runs the
    same block functions in-process, for small logs (an experiment's follow-up window)
    where starting Ray Data tasks costs more than the work. ``track_ids`` fixes the item
    vocabulary (pass the catalog's so item codes are catalog rows).
    """
    if engine not in ("ray", "pyarrow"):
        raise ValueError(f"engine must be 'ray' or 'pyarrow', got {engine!r}")
    decision_files = parquet_files(decisions_uri(log_uri), days)
    organic_files = parquet_files(organic_uri(log_uri), days)
    if not decision_files and not organic_files:
        raise FileNotFoundError(f"no decision or organic parquet files under {log_uri}")
    filesystem, _ = storage.resolve(log_uri)
    convert_decisions = _decision_block(track_minutes)
    if engine == "ray":
        tables = _reduce_with_ray_data(decision_files, organic_files, filesystem, convert_decisions)
    else:
        import pyarrow.parquet as pq

        tables = [
            convert_decisions(pq.read_table(f, columns=_DECISION_COLUMNS, filesystem=filesystem))
            for f in decision_files
        ] + [
            _organic_block(pq.read_table(f, columns=_ORGANIC_COLUMNS, filesystem=filesystem))
            for f in organic_files
        ]
    tables = [table for table in tables if table.num_rows]
    if not tables:
        return listen_days_from_frame(
            pd.DataFrame({"user_id": [], "track_id": [], "day": np.zeros(0, np.int32)}),
            track_ids=track_ids,
        )
    merged = pa.concat_tables(tables, promote_options="default")
    return listen_days_from_frame(merged.to_pandas(), track_ids=track_ids)


def _reduce_with_ray_data(
    decision_files, organic_files, filesystem, convert_decisions
) -> list[pa.Table]:
    import ray
    import ray.data

    parts = []
    if decision_files:
        parts.append(
            ray.data.read_parquet(
                decision_files, columns=_DECISION_COLUMNS, filesystem=filesystem, partitioning=None
            ).map_batches(convert_decisions, batch_format="pyarrow", batch_size=None)
        )
    if organic_files:
        parts.append(
            ray.data.read_parquet(
                organic_files, columns=_ORGANIC_COLUMNS, filesystem=filesystem, partitioning=None
            ).map_batches(_organic_block, batch_format="pyarrow", batch_size=None)
        )
    dataset = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    return list(ray.get(dataset.to_arrow_refs()))
