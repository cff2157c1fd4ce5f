"""The durable feedback sink: a write-ahead journal in front of the parquet decision log.

Where it sits: the ingress turns each ``/v1/feedback`` into a decision-log row
(rl/feedback/schema.py) and hands it here. ``append`` writes the row as one JSON line to a local
journal file and fsyncs it *before* the feedback is acknowledged, so nothing acknowledged
is lost if the process dies. ``flush`` (on a timer, when enough rows wait, and on close)
seals the journal segment, writes its rows through ``rl.feedback.log.FeedbackLogWriter``
into the same day-partitioned parquet dataset training reads, and only then deletes the
segment. A sink that starts and finds sealed or orphaned segments (a crash) replays them
first. Delivery is at-least-once: a crash between the parquet write and the segment's
deletion replays that segment, and readers can drop duplicate ``request_id``s.

Several sinks may share one journal directory (Ingress replicas on one machine): each
holds an exclusive ``flock`` on its own current segment, so a starting sink takes over only
the segments of sinks that died (the kernel drops a dead process's locks), and flushes of
sealed segments are serialised across processes by a lock file, so no segment is written
twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from rl.feedback.log import FeedbackLogWriter

CURRENT_PREFIX, SEALED_PREFIX = "current-", "sealed-"
FLUSH_LOCK = "flush.lock"


def _open_locked(path: Path) -> Any:
    """Open a segment for appending and hold an exclusive lock on it while this sink lives."""
    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (the sink owns it)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def _owner_is_gone(path: Path) -> bool:
    """True when no live process holds ``path``'s lock (its sink died or closed)."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
            return True
    except BlockingIOError:
        return False
    except FileNotFoundError:
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class FeedbackSink:
    """Journal-then-parquet writer of served decision rows.

    Parameters
    ----------
    log_uri : the decision log (any rl.storage URI); rows land in ``<log>/decisions/day=N/``.
    journal_dir : local directory of the write-ahead journal (must be a local disk).
    flush_interval_s : the timer: buffered rows are written at least this often. > 0.
    flush_rows : a flush also happens once this many rows wait. >= 1.
    fsync : fsync every journal append (the durability guarantee; off only in benchmarks).
    k, n_betas : passed to the writer's validation (at most k candidates, R betas each).
    """

    def __init__(
        self,
        log_uri: str,
        journal_dir: str,
        flush_interval_s: float = 5.0,
        flush_rows: int = 2_000,
        fsync: bool = True,
        k: int | None = None,
        n_betas: int | None = None,
    ) -> None:
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s}")
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows}")
        self.log_uri = log_uri
        self.journal_dir = Path(journal_dir)
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.flush_interval_s = float(flush_interval_s)
        self.flush_rows = flush_rows
        self.fsync = fsync
        self.writer = FeedbackLogWriter(log_uri, k=k, n_betas=n_betas)
        self.sink_id = uuid.uuid4().hex[:12]
        self._sequence = 0
        self._append_lock = threading.Lock()  # journal file + counters
        self._flush_lock = threading.Lock()  # one flush at a time
        self._journal_rows = 0
        self.acknowledged_rows = 0
        self.last_flush_at: float | None = None
        self.last_error: str | None = None
        self._closed = False
        # Segments left by a dead process are sealed and replayed before new rows; a
        # segment whose lock is held belongs to a live sink sharing this directory.
        for stale in sorted(self.journal_dir.glob(f"{CURRENT_PREFIX}*.jsonl")):
            if _owner_is_gone(stale):
                self._seal(stale)
        self._current_path = self.journal_dir / f"{CURRENT_PREFIX}{self.sink_id}.jsonl"
        self._file = _open_locked(self._current_path)
        self.flush()
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._run_timer, name="feedback-flush", daemon=True)
        self._timer.start()

    # -- appending --------------------------------------------------------------------
    def append(self, row: dict[str, Any]) -> None:
        """Journal one decision row durably; return only once it is on disk."""
        line = json.dumps({key: _jsonable(value) for key, value in row.items()})
        with self._append_lock:
            if self._closed:
                raise RuntimeError("the feedback sink is closed")
            self._file.write(line + "\n")
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            self._journal_rows += 1
            self.acknowledged_rows += 1
            due = self._journal_rows >= self.flush_rows
        if due:
            threading.Thread(target=self._flush_quietly, daemon=True).start()

    # -- flushing ---------------------------------------------------------------------
    def flush(self) -> int:
        """Seal the current segment and write every sealed segment to parquet. Returns rows."""
        with self._flush_lock:
            with self._append_lock:
                if self._journal_rows and not self._closed:
                    self._seal(self._current_path)  # renamed while still locked: no one takes it
                    self._file.close()
                    self._file = _open_locked(self._current_path)
                    self._journal_rows = 0
            written = 0
            with open(self.journal_dir / FLUSH_LOCK, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one flusher per directory, across processes
                for segment in sorted(self.journal_dir.glob(f"{SEALED_PREFIX}*.jsonl")):
                    if not segment.exists():
                        continue
                    rows = [
                        json.loads(line)
                        for line in segment.read_text(encoding="utf-8").splitlines()
                        if line.strip()
                    ]
                    if rows:
                        # Invalid rows are quarantined by the writer (with the reason), not lost.
                        self.writer.append(rows)
                        self.writer.flush()
                        written += len(rows)
                    segment.unlink()
            self.last_flush_at = time.time()
            return written

    def _seal(self, path: Path) -> None:
        self._sequence += 1
        sealed = (
            self.journal_dir / f"{SEALED_PREFIX}{time.time_ns():020d}-{self._sequence:06d}.jsonl"
        )
        if path.exists():
            os.replace(path, sealed)

    def _flush_quietly(self) -> None:
        try:
            self.flush()
            self.last_error = None
        except Exception as exc:  # the journal keeps the rows; the next flush retries
            self.last_error = f"{type(exc).__name__}: {exc}"

    def _run_timer(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self._flush_quietly()

    def close(self) -> None:
        """Stop the timer, write everything journaled, close the writer."""
        if self._closed:
            return
        self._stop.set()
        self.flush()
        with self._append_lock:
            self._closed = True
            self._file.close()
            if self._current_path.exists() and self._current_path.stat().st_size == 0:
                self._current_path.unlink()
        self.writer.close()

    @property
    def counts(self) -> dict[str, Any]:
        return {
            "acknowledged_rows": self.acknowledged_rows,
            "journaled_unflushed_rows": self._journal_rows,
            "written_rows": self.writer.written_rows,
            "quarantined_rows": self.writer.quarantined_rows,
            "log_uri": self.log_uri,
            "journal_dir": str(self.journal_dir),
            "last_flush_at": self.last_flush_at,
            "last_error": self.last_error,
        }
