"""The optional ``candidate_sources`` log field: written when given, null otherwise, and
logs written before it existed still read."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rl.feedback.log import FeedbackLogWriter, read_decisions_table
from rl.feedback.rows import decision_row, decision_table
from rl.feedback.schema import DECISION_SCHEMA, validate_rows, validate_table


def _row(**changes):
    row = dict(
        user_id="u1", session_id="u1-s", day=0, position=0, timestamp=1_700_000_000,
        current_track_id="t0", candidate_track_ids=["a", "b", "c"],
        candidate_relationship=np.zeros((3, 4)), user_taste=np.zeros(5), chosen_index=1,
        behaviour_logp=-1.0, listened=True, listen_fraction=1.0, liked=False, skip_level=3,
        reward=1.0, source="service", policy_version="v0001",
    )  # fmt: skip
    row.update(changes)
    return decision_row(**row)


def test_sources_are_written_and_checked():
    good = _row(candidate_sources=["song", "taste", "relationship"])
    assert good["candidate_sources"] == ["song", "taste", "relationship"]
    assert _row()["candidate_sources"] is None
    valid, rejections = validate_rows(
        [
            good,
            _row(),
            _row(candidate_sources=["song", "taste"]),
            _row(candidate_sources=["song", "radio", "taste"]),
        ],
        k=4,
        n_betas=4,
    )
    assert valid.num_rows == 2
    reasons = sorted(r.reason for r in rejections)
    assert len(reasons) == 2
    assert "outside" in reasons[0] and "one entry per candidate" in reasons[1]


def test_decision_table_takes_or_leaves_out_sources():
    rows = [_row(), _row(position=1)]
    columns = {name: [row[name] for row in rows] for name in DECISION_SCHEMA.names}
    del columns["candidate_sources"]
    table = decision_table(columns)
    assert table["candidate_sources"].null_count == 2
    columns["candidate_sources"] = [["song", "song", "popular"], ["sticky", "song", "song"]]
    table = decision_table(columns)
    assert table["candidate_sources"].to_pylist()[1] == ["sticky", "song", "song"]
    assert validate_table(table, k=4, n_betas=4)[0].num_rows == 2


@pytest.mark.parametrize("reader", ["table", pytest.param("ray", marks=pytest.mark.slow)])
def test_a_log_written_before_the_field_still_reads(tmp_path, reader):
    log = str(tmp_path / "log")
    with FeedbackLogWriter(log, k=4, n_betas=4) as writer:
        writer.append([_row(), _row(position=1, candidate_sources=["song", "taste", "sticky"])])
    # Rewrite the day's file as an old writer would have: without the column.
    files = list((tmp_path / "log").rglob("*.parquet"))
    decisions = [f for f in files if "decisions" in str(f)]
    assert decisions
    for path in decisions:
        old = pq.read_table(path).drop_columns(["candidate_sources"])
        pq.write_table(old, path)
    if reader == "table":
        table = read_decisions_table(log)
    else:
        import ray

        from rl.feedback.log import read_decisions

        ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True)
        try:
            table = pa.Table.from_pylist(read_decisions(log).take_all(), schema=DECISION_SCHEMA)
        finally:
            ray.shutdown()
    assert table.num_rows == 2
    assert table["candidate_sources"].null_count == 2
    # And an old table given to the validator directly is conformed, not refused.
    assert validate_table(old)[0].num_rows == 2
