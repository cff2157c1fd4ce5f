"""The one builder of feedback-log rows: the dict builder (service) and the columnar one
(importers, simulator) give the same valid rows; derived fields are derived right."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rl.feedback.rows import decision_row, decision_table, organic_from_plays, play_table
from rl.feedback.schema import DECISION_SCHEMA, validate_play_table, validate_rows, validate_table

# 2024-01-02 08:30 UTC, a Tuesday
TIMESTAMP = 1_704_184_200


def row_arguments(**changes):
    arguments = dict(
        user_id="u1", session_id="u1-s1", day=3, position=2, timestamp=TIMESTAMP,
        current_track_id="t0", candidate_track_ids=np.array(["t1", "t2", "t3"]),
        candidate_relationship=np.full((3, 4), 0.25, np.float32), user_taste=np.zeros(5),
        chosen_index=1, behaviour_logp=-0.7, listened=True, listen_fraction=0.9, liked=False,
        skip_level=3, reward=1.2, source="service", policy_version="v1", arm="a",
        request_id="r1",
    )  # fmt: skip
    arguments.update(changes)
    return arguments


def test_decision_row_derives_and_validates():
    row = decision_row(**row_arguments())
    assert list(row) == DECISION_SCHEMA.names
    assert row["chosen_track_id"] == "t2"
    assert (row["hour"], row["weekday"]) == (8, 1)
    assert row["candidate_relationship"] == [0.25] * 12  # (K, R) flattened candidate-major
    valid, rejections = validate_rows([row], k=4, n_betas=4)
    assert valid.num_rows == 1 and not rejections


def test_out_of_range_choice_is_left_for_validation_to_reject():
    row = decision_row(**row_arguments(chosen_index=7))
    assert row["chosen_track_id"] is None
    _, rejections = validate_rows([row])
    assert "chosen_index out of range" in rejections[0].reason


def test_decision_table_equals_the_dict_rows():
    rows = [
        decision_row(
            **row_arguments(position=p, chosen_index=p % 3, timestamp=TIMESTAMP + 3_600 * p)
        )
        for p in range(5)
    ]
    columns = {
        name: [row[name] for row in rows]
        for name in DECISION_SCHEMA.names
        if name not in ("chosen_track_id", "hour", "weekday", "arm", "request_id")
    }
    columns["candidate_relationship"] = np.full((5, 12), 0.25, np.float32)  # 2-D form
    columns["source"] = "service"  # a scalar is broadcast
    table = decision_table(columns | {"arm": "a", "request_id": "r1"})
    assert table.to_pylist() == pa.Table.from_pylist(rows, schema=DECISION_SCHEMA).to_pylist()
    valid, rejections = validate_table(table)
    assert valid.num_rows == 5 and not rejections


def test_decision_table_names_missing_columns():
    with pytest.raises(ValueError, match=r"missing \['reward'\]"):
        decision_table({k: v for k, v in row_arguments().items() if k != "reward"})


def test_play_table_and_its_organic_sums():
    plays = play_table(
        {
            "user_id": ["a", "a", "a", "b"], "session_id": ["a-s0", "a-s0", "a-s1", "b-s0"],
            "day": [0, 0, 1, 0], "position": [0, 1, 0, 0],
            "timestamp": [TIMESTAMP, TIMESTAMP + 200, TIMESTAMP + 86_400, TIMESTAMP],
            "track_id": ["x", "x", "x", "y"], "in_catalog": [True, True, True, False],
            "ms_played": pa.array([120_000, 10_000, 60_000, None], pa.int64()),
            "streamed": [True, False, True, True], "skipped": pa.array([False, True, None, None]),
            "source": "lastfm",
        }
    )  # fmt: skip
    assert plays["hour"].to_pylist() == [8, 8, 8, 8]
    valid, rejections = validate_play_table(plays)
    assert valid.num_rows == 4 and not rejections
    organic = organic_from_plays(plays).to_pandas().sort_values(["user_id", "day"])
    assert organic[["user_id", "day", "track_id", "streams"]].values.tolist() == [
        ["a", 0, "x", 1], ["a", 1, "x", 1], ["b", 0, "y", 1],
    ]  # fmt: skip
    assert organic["minutes"].tolist() == pytest.approx([2.0, 1.0, 0.0])
