"""The feedback-log writer: valid rows written and read back, bad rows quarantined with
reasons and counted, day partitions, background writes, organic rows."""

import json
import os

import pyarrow as pa
import pytest

from rl.feedback.log import (
    FeedbackLogWriter,
    read_decisions_table,
    read_organic_table,
    read_quarantine,
)
from rl.feedback.schema import DECISION_SCHEMA


def row(day=0, position=0, **changes):
    base = dict(
        user_id="u1", session_id=f"u1-d{day}", day=day, position=position, timestamp=1_704_067_200 + position,
        hour=8, weekday=0, current_track_id="t0", candidate_track_ids=["t1", "t2"],
        candidate_relationship=[0.0] * 8, user_taste=[0.1] * 5, chosen_index=0, chosen_track_id="t1",
        behaviour_logp=-0.7, listened=True, listen_fraction=0.9, liked=False, skip_level=2, reward=-0.2,
        source="service", policy_version="v1", arm="control", request_id=f"r{day}-{position}",
    )  # fmt: skip
    base.update(changes)
    return base


def test_valid_rows_written_bad_rows_quarantined_and_counted(tmp_path):
    log = str(tmp_path / "log")
    rows = [row(0, 0), row(0, 1, hour=99), row(1, 0), row(1, 1, listen_fraction=-0.1), row(2, 0)]
    with FeedbackLogWriter(log, k=4, n_betas=4) as writer:
        assert writer.append(rows) == 3
        assert writer.counts["buffered_rows"] == 3  # buffered until flush/close
    assert writer.counts["written_rows"] == 3
    assert writer.counts["quarantined_rows"] == 2
    assert writer.counts["quarantine_reasons"] == {
        "hour must be in 0..23": 1,
        "listen_fraction must be in [0, 1]": 1,
    }
    assert "2 rows QUARANTINED" in writer.report()
    assert sorted(os.listdir(tmp_path / "log" / "decisions")) == ["day=0", "day=1", "day=2"]
    table = read_decisions_table(log)
    assert sorted(table.column("request_id").to_pylist()) == ["r0-0", "r1-0", "r2-0"]
    quarantined = read_quarantine(log)
    assert sorted(q["reason"] for q in quarantined) == [
        "hour must be in 0..23",
        "listen_fraction must be in [0, 1]",
    ]
    assert {q["row"]["request_id"] for q in quarantined} == {"r0-1", "r1-1"}
    assert read_decisions_table(log, days=[1]).column("day").to_pylist() == [1]


def test_quarantine_file_is_jsonl_with_reason(tmp_path):
    log = str(tmp_path / "log")
    with FeedbackLogWriter(log) as writer:
        writer.append([row(reward=float("nan"))])
    (name,) = os.listdir(tmp_path / "log" / "quarantine")
    record = json.loads((tmp_path / "log" / "quarantine" / name).read_text().splitlines()[0])
    assert record["reason"] == "reward must be finite" and record["dataset"] == "decisions"


@pytest.mark.parametrize("background", [False, True])
def test_table_appends_flush_by_size_and_never_lose_rows(tmp_path, background):
    log = str(tmp_path / "log")
    writer = FeedbackLogWriter(log, flush_rows=50, background=background)
    expected = 0
    for day in range(4):
        rows = [row(day, p) for p in range(40)] + [row(day, 99, skip_level=7)]
        writer.append(pa.Table.from_pylist(rows, schema=DECISION_SCHEMA))
        expected += 40
    writer.close()
    assert writer.written_rows == expected and writer.quarantined_rows == 4
    table = read_decisions_table(log)
    assert table.num_rows == expected
    assert sorted(set(table.column("day").to_pylist())) == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="closed"):
        writer.append([row()])


def test_organic_rows_round_trip(tmp_path):
    log = str(tmp_path / "log")
    with FeedbackLogWriter(log) as writer:
        writer.append_organic(
            [
                {"user_id": "u1", "day": 3, "track_id": "t1", "minutes": 7.5, "streams": 2},
                {"user_id": "u1", "day": 3, "track_id": "t1", "minutes": 1.0, "streams": 0},
            ]
        )
    assert writer.written_organic_rows == 1 and writer.quarantined_rows == 1
    organic = read_organic_table(log)
    assert organic.to_pylist() == [
        {"user_id": "u1", "day": 3, "track_id": "t1", "minutes": 7.5, "streams": 2}
    ]


def test_read_rejects_an_invalid_foreign_file(tmp_path):
    import pyarrow.parquet as pq

    log = tmp_path / "log"
    (log / "decisions" / "day=0").mkdir(parents=True)
    bad = pa.Table.from_pylist([row(skip_level=5)], schema=DECISION_SCHEMA)
    pq.write_table(bad, log / "decisions" / "day=0" / "part-foreign.parquet")
    with pytest.raises(ValueError, match="skip_level must be in 0..3"):
        read_decisions_table(str(log))
    assert read_decisions_table(str(log), validate=False).num_rows == 1


def test_empty_log_reads_as_empty_table(tmp_path):
    assert read_decisions_table(str(tmp_path / "nothing")).num_rows == 0
