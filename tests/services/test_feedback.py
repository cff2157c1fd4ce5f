"""The durable sink: acknowledged rows survive a crash and land in the parquet log."""

import numpy as np

from rl.feedback.log import read_decisions_table, read_quarantine
from services.core.feedback_journal import FeedbackSink


def decision_row(i: int, day: int = 20_000) -> dict:
    return {
        "user_id": f"u{i % 3}", "session_id": "s", "day": day, "position": i, "timestamp": day * 86_400,
        "hour": 10, "weekday": 2, "current_track_id": "now", "candidate_track_ids": ["a", "b"],
        "candidate_relationship": np.zeros(8, np.float32), "user_taste": np.zeros(5, np.float32),
        "chosen_index": 1, "chosen_track_id": "b", "behaviour_logp": -0.5, "listened": True,
        "listen_fraction": 0.8, "liked": False, "skip_level": 3, "reward": 0.8, "source": "service",
        "policy_version": "logging", "arm": "", "request_id": f"r{i}",
    }  # fmt: skip


def test_rows_reach_parquet_on_flush_and_close(tmp_path):
    sink = FeedbackSink(
        str(tmp_path / "log"), str(tmp_path / "journal"), flush_interval_s=60, k=4, n_betas=4
    )
    for i in range(3):
        sink.append(decision_row(i))
    assert read_decisions_table(str(tmp_path / "log")).num_rows == 0  # journaled, not written yet
    assert sink.flush() == 3
    sink.append(decision_row(3, day=20_001))
    sink.close()
    table = read_decisions_table(str(tmp_path / "log"))
    assert sorted(table["request_id"].to_pylist()) == ["r0", "r1", "r2", "r3"]
    assert sorted(set(table["day"].to_pylist())) == [20_000, 20_001]
    assert not list((tmp_path / "journal").glob("*.jsonl"))  # nothing left behind


def test_a_crash_loses_nothing_acknowledged(tmp_path):
    crashed = FeedbackSink(str(tmp_path / "log"), str(tmp_path / "journal"), flush_interval_s=60)
    for i in range(5):
        crashed.append(decision_row(i))
    crashed._stop.set()  # the process "dies": no flush, no close
    crashed._file.close()
    restarted = FeedbackSink(str(tmp_path / "log"), str(tmp_path / "journal"), flush_interval_s=60)
    restarted.close()
    table = read_decisions_table(str(tmp_path / "log"))
    assert sorted(table["request_id"].to_pylist()) == [f"r{i}" for i in range(5)]


def test_timer_flushes_and_invalid_rows_are_quarantined(tmp_path):
    import time

    sink = FeedbackSink(str(tmp_path / "log"), str(tmp_path / "journal"), flush_interval_s=0.1)
    sink.append(decision_row(0))
    sink.append({**decision_row(1), "skip_level": 9})  # invalid: quarantined with its reason
    deadline = time.monotonic() + 10
    while sink.writer.written_rows < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.writer.written_rows == 1
    sink.close()
    assert len(read_quarantine(str(tmp_path / "log"))) == 1


def test_two_live_sinks_share_a_journal_directory(tmp_path):
    """Two Ingress replicas on one machine: neither takes over the other's live segment,
    a dead one's segment is replayed by the next to start, and every row lands once."""
    log, journal = str(tmp_path / "log"), str(tmp_path / "journal")
    first = FeedbackSink(log, journal, flush_interval_s=60)
    first.append(decision_row(0))
    second = FeedbackSink(log, journal, flush_interval_s=60)  # starts while first lives
    second.append(decision_row(1))
    first.append(decision_row(2))  # first's segment was not sealed from under it
    crashed = FeedbackSink(log, journal, flush_interval_s=60)
    crashed.append(decision_row(3))
    crashed._stop.set()
    crashed._file.close()  # dies: the kernel drops its lock
    third = FeedbackSink(log, journal, flush_interval_s=60)  # takes over crashed's rows
    for i, sink in enumerate((second, first, third)):
        sink.append(decision_row(10 + i))
        sink.close()
    ids = read_decisions_table(log)["request_id"].to_pylist()
    assert sorted(ids) == ["r0", "r1", "r10", "r11", "r12", "r2", "r3"]  # each exactly once
