"""Writing and reading the feedback log (parquet partitioned by day, under a URI).

Where it sits: the simulator, the serving ingress and the MSSD importer append decision
rows through ``FeedbackLogWriter``; training and evaluation read them back with
``read_decisions`` (a Ray Dataset) or ``read_decisions_table`` (pyarrow, small logs).

Layout under a log URI (local path or any pyarrow filesystem URI, via rl/storage.py):

    <log>/decisions/day=N/part-<writer>-<seq>.parquet   decision rows (rl/feedback/schema.py)
    <log>/organic/day=N/part-<writer>-<seq>.parquet     organic listens per user-day
    <log>/plays/day=N/part-<writer>-<seq>.parquet       plays of an imported history
    <log>/quarantine/<writer>-<seq>.jsonl              rejected rows: {"reason", "row"}
    <log>/summary.json                                 written by `encore simulate`

Every file also holds its ``day`` column, and readers use no partition discovery, so the
``day=N`` folders are layout (cheap per-day reads), never a second source of truth.
Valid rows are buffered per day and written on ``flush``/``close`` (and whenever the
buffer passes ``flush_rows``); invalid rows go to the quarantine file at once, and the
writer counts both. With ``background=True`` the parquet encoding and writing run in one
worker thread (pyarrow releases the GIL), overlapping with the caller's next batch: the
simulator's second core. ``flush``/``close`` wait for it and re-raise any write error.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from rl import storage
from rl.feedback.schema import (
    DECISION_SCHEMA,
    ORGANIC_SCHEMA,
    PLAY_SCHEMA,
    Rejection,
    decision_checks,
    split_valid,
    table_from_rows,
    validate_organic_table,
    validate_play_table,
    validate_table,
)

if TYPE_CHECKING:
    import ray.data

DECISIONS_DIR, ORGANIC_DIR, QUARANTINE_DIR = "decisions", "organic", "quarantine"
PLAYS_DIR = "plays"


def decisions_uri(log_uri: str) -> str:
    return storage.join(log_uri, DECISIONS_DIR)


def organic_uri(log_uri: str) -> str:
    return storage.join(log_uri, ORGANIC_DIR)


def plays_uri(log_uri: str) -> str:
    return storage.join(log_uri, PLAYS_DIR)


def quarantine_uri(log_uri: str) -> str:
    return storage.join(log_uri, QUARANTINE_DIR)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class FeedbackLogWriter:
    """Validated, buffered writer of decision and organic rows under ``log_uri``.

    Parameters
    ----------
    log_uri : root URI of the log.
    k, n_betas : when given, rows must have at most ``k`` candidates and exactly
        ``len(candidates) * n_betas`` relationship values.
    flush_rows : buffered valid rows per dataset that trigger a write.
    compression : parquet codec ("snappy", "zstd", "lz4", "none").
    background : write parquet files in a worker thread (see the module docstring).
    """

    def __init__(
        self,
        log_uri: str,
        k: int | None = None,
        n_betas: int | None = None,
        flush_rows: int = 500_000,
        compression: str = "snappy",
        background: bool = False,
    ) -> None:
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows}")
        self.log_uri = log_uri
        self.k, self.n_betas = k, n_betas
        self.flush_rows = flush_rows
        self.compression = compression
        self.writer_id = uuid.uuid4().hex[:12]
        self._sequence = 0
        # (dataset, day) -> valid tables waiting to be written
        self._buffers: dict[tuple[str, int], list[pa.Table]] = {}
        self._buffered = 0
        self._lock = threading.Lock()
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="feedback-log") if background else None
        )
        self._pending: list[Future[None]] = []
        self.written_rows = 0
        self.written_organic_rows = 0
        self.written_play_rows = 0
        self.quarantined_rows = 0
        self.quarantine_reasons: Counter[str] = Counter()
        self.files_written: list[str] = []
        self.closed = False

    # -- appending --------------------------------------------------------------------
    def append(self, rows: Sequence[dict[str, Any]] | pa.Table) -> int:
        """Validate decision rows; buffer the valid, quarantine the rest. Returns #valid."""
        self._check_open()
        if isinstance(rows, pa.Table):
            valid, rejections = validate_table(rows, k=self.k, n_betas=self.n_betas)
        else:
            typed, rejections = table_from_rows(rows, DECISION_SCHEMA)
            valid, more = split_valid(typed, decision_checks(typed, k=self.k, n_betas=self.n_betas))
            rejections += more
        self._quarantine(rejections, DECISIONS_DIR)
        return self._buffer(DECISIONS_DIR, valid)

    def append_organic(self, rows: Sequence[dict[str, Any]] | pa.Table) -> int:
        """Validate organic-listen rows; buffer the valid, quarantine the rest."""
        self._check_open()
        if isinstance(rows, pa.Table):
            valid, rejections = validate_organic_table(rows)
        else:
            typed, rejections = table_from_rows(rows, ORGANIC_SCHEMA)
            valid, more = validate_organic_table(typed)
            rejections += more
        self._quarantine(rejections, ORGANIC_DIR)
        return self._buffer(ORGANIC_DIR, valid)

    def append_plays(self, rows: pa.Table) -> int:
        """Validate play rows of an imported history; buffer the valid, quarantine the rest."""
        self._check_open()
        valid, rejections = validate_play_table(rows)
        self._quarantine(rejections, PLAYS_DIR)
        return self._buffer(PLAYS_DIR, valid)

    def quarantine(self, rejections: list[Rejection], dataset: str) -> None:
        """Quarantine rows refused before they could be typed (an importer's unparseable
        source rows), counted with the writer's own rejections."""
        self._check_open()
        self._quarantine(rejections, dataset)

    def flush(self) -> None:
        """Write every buffered valid row (one file per dataset and day) and wait for it."""
        self._write_buffers()
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()  # re-raise a failed background write here

    def close(self) -> None:
        if not self.closed:
            try:
                self.flush()
            finally:
                if self._executor is not None:
                    self._executor.shutdown(wait=True)
                self.closed = True

    def __enter__(self) -> FeedbackLogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def counts(self) -> dict[str, Any]:
        """What happened so far: rows written, buffered, quarantined (by reason)."""
        return {
            "written_rows": self.written_rows,
            "written_organic_rows": self.written_organic_rows,
            "written_play_rows": self.written_play_rows,
            "buffered_rows": self._buffered,
            "quarantined_rows": self.quarantined_rows,
            "quarantine_reasons": dict(self.quarantine_reasons),
            "files": len(self.files_written),
        }

    def report(self) -> str:
        """One line for a CLI: counts, and where the quarantine file is when non-empty."""
        line = f"{self.written_rows} decision rows and {self.written_organic_rows} organic rows written"
        if self.written_play_rows:
            line += f" (and {self.written_play_rows} play rows)"
        if self.quarantined_rows:
            reasons = ", ".join(
                f"{reason} ({count})" for reason, count in self.quarantine_reasons.most_common(5)
            )
            line += f"; {self.quarantined_rows} rows QUARANTINED under {quarantine_uri(self.log_uri)}: {reasons}"
        return line

    # -- internals --------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("FeedbackLogWriter is closed")

    def _next_name(self) -> str:
        self._sequence += 1
        return f"{self.writer_id}-{self._sequence:05d}"

    def _buffer(self, dataset: str, valid: pa.Table) -> int:
        if valid.num_rows:
            days = valid.column("day").to_numpy()
            if (days == days[0]).all():
                self._buffers.setdefault((dataset, int(days[0])), []).append(valid)
            else:
                # One sort, then a slice per day (filtering once per day is days x rows).
                order = np.argsort(days, kind="stable")
                by_day = valid.take(pa.array(order))
                sorted_days = days[order]
                starts = np.flatnonzero(np.r_[True, sorted_days[1:] != sorted_days[:-1]])
                stops = np.r_[starts[1:], len(sorted_days)]
                for start, stop in zip(starts, stops, strict=True):
                    part = by_day.slice(int(start), int(stop - start))
                    self._buffers.setdefault((dataset, int(sorted_days[start])), []).append(part)
            self._buffered += valid.num_rows
            if self._buffered >= self.flush_rows:
                self._write_buffers()
        return valid.num_rows

    def _quarantine(self, rejections: list[Rejection], dataset: str) -> None:
        if not rejections:
            return
        lines = [
            json.dumps({"dataset": dataset, "reason": r.reason, "row": _json_safe(r.row)})
            for r in rejections
        ]
        uri = storage.join(quarantine_uri(self.log_uri), f"{self._next_name()}.jsonl")
        storage.write_bytes(uri, ("\n".join(lines) + "\n").encode("utf-8"))
        self.quarantined_rows += len(rejections)
        self.quarantine_reasons.update(r.reason for r in rejections)

    def _write_buffers(self) -> None:
        buffers, self._buffers, self._buffered = self._buffers, {}, 0
        for (dataset, day), tables in sorted(buffers.items()):
            uri = storage.join(
                self.log_uri, dataset, f"day={day}", f"part-{self._next_name()}.parquet"
            )
            table = pa.concat_tables(tables)
            if self._executor is None:
                self._write_file(dataset, uri, table)
            else:
                self._pending.append(self._executor.submit(self._write_file, dataset, uri, table))
                # Bound the memory held by queued tables: wait when the writer lags.
                while len(self._pending) > 4:
                    self._pending.pop(0).result()

    def _write_file(self, dataset: str, uri: str, table: pa.Table) -> None:
        filesystem, path = storage.resolve(uri)
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(
            table, path, filesystem=filesystem, compression=self.compression, row_group_size=256_000
        )
        with self._lock:
            self.files_written.append(uri)
            if dataset == DECISIONS_DIR:
                self.written_rows += table.num_rows
            elif dataset == PLAYS_DIR:
                self.written_play_rows += table.num_rows
            else:
                self.written_organic_rows += table.num_rows


# -- readers --------------------------------------------------------------------------
def _day_paths(dataset_uri: str, days: Sequence[int] | None) -> list[str]:
    present = [name for name in storage.list_dir(dataset_uri) if name.startswith("day=")]
    present.sort(key=lambda name: int(name.split("=", 1)[1]))
    if days is not None:
        wanted = {f"day={int(day)}" for day in days}
        present = [name for name in present if name in wanted]
    return [storage.join(dataset_uri, name) for name in present]


def _parquet_files(dataset_uri: str, days: Sequence[int] | None) -> list[str]:
    """Resolved paths of every parquet file of the chosen day partitions, in day order."""
    files: list[str] = []
    for day_uri in _day_paths(dataset_uri, days):
        names = [name for name in storage.list_dir(day_uri) if name.endswith(".parquet")]
        files.extend(storage.resolve(storage.join(day_uri, name))[1] for name in names)
    return files


def _read_table(dataset_uri: str, schema: pa.Schema, days: Sequence[int] | None) -> pa.Table:
    resolved = _parquet_files(dataset_uri, days)
    if not resolved:
        return schema.empty_table()
    filesystem, _ = storage.resolve(dataset_uri)
    dataset = pads.dataset(
        resolved, schema=schema, format="parquet", filesystem=filesystem, partitioning=None
    )
    return dataset.to_table()


def read_decisions_table(
    log_uri: str, days: Sequence[int] | None = None, validate: bool = True
) -> pa.Table:
    """All decision rows (optionally some days) as one pyarrow table, for small logs.

    With ``validate`` the rows are checked again on read; an invalid row raises (a log
    written through the writer never holds one, so this catches a tampered or foreign file).
    """
    table = _read_table(decisions_uri(log_uri), DECISION_SCHEMA, days)
    if validate and table.num_rows:
        _, rejections = validate_table(table)
        if rejections:
            raise ValueError(
                f"{len(rejections)} invalid decision rows in {log_uri}, first: {rejections[0].reason}"
            )
    return table


def read_organic_table(log_uri: str, days: Sequence[int] | None = None) -> pa.Table:
    return _read_table(organic_uri(log_uri), ORGANIC_SCHEMA, days)


def read_plays_table(log_uri: str, days: Sequence[int] | None = None) -> pa.Table:
    """Play rows of an imported history (empty for a simulated or served log)."""
    return _read_table(plays_uri(log_uri), PLAY_SCHEMA, days)


def read_decisions(
    log_uri: str, days: Sequence[int] | None = None, validate: bool = True
) -> ray.data.Dataset:
    """Decision rows as a Ray Dataset (``ray.data.read_parquet``), optionally some days.

    With ``validate`` each block is re-checked against the schema rules as it is read.
    """
    import ray.data

    resolved = _parquet_files(decisions_uri(log_uri), days)
    if not resolved:
        raise FileNotFoundError(f"no decision files under {decisions_uri(log_uri)} (days={days})")
    filesystem, _ = storage.resolve(log_uri)
    dataset = ray.data.read_parquet(
        resolved, filesystem=filesystem, schema=DECISION_SCHEMA, partitioning=None
    )
    if validate:
        dataset = dataset.map_batches(
            _raise_on_invalid, batch_format="pyarrow", zero_copy_batch=True
        )
    return dataset


def _raise_on_invalid(batch: pa.Table) -> pa.Table:
    _, rejections = validate_table(batch)
    if rejections:
        raise ValueError(
            f"{len(rejections)} invalid decision rows in the log, first: {rejections[0].reason}"
        )
    return batch


def read_quarantine(log_uri: str) -> list[dict[str, Any]]:
    """Every quarantined row with its reason (``{"dataset", "reason", "row"}``)."""
    records: list[dict[str, Any]] = []
    for name in storage.list_dir(quarantine_uri(log_uri)):
        text = storage.read_bytes(storage.join(quarantine_uri(log_uri), name)).decode("utf-8")
        records.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return records
