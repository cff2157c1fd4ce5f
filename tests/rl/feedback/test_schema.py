"""Decision-row validation: each bad-row case is rejected with its reason, on both paths
(dict rows and pyarrow tables); good rows pass untouched."""

import math

import pyarrow as pa
import pytest

from rl.feedback.schema import (
    DECISION_SCHEMA,
    LogSchemaError,
    validate_organic_table,
    validate_rows,
    validate_table,
)


def good_row(**changes):
    row = dict(
        user_id="u1", session_id="u1-d0001", day=1, position=0, timestamp=1_704_153_600, hour=8,
        weekday=1, current_track_id="t0", candidate_track_ids=["t1", "t2", "t3"],
        candidate_relationship=[0.1] * 12, user_taste=[0.0, 0.5, -0.5, 1.0, 0.2], chosen_index=2,
        chosen_track_id="t3", behaviour_logp=-1.2, listened=True, listen_fraction=1.0, liked=False,
        skip_level=3, reward=1.0, source="simulator", policy_version="myopic-v0", arm="", request_id=None,
    )  # fmt: skip
    row.update(changes)
    return row


BAD_ROWS = [
    ({"day": -1}, "day must be >= 0"),
    ({"position": -2}, "position must be >= 0"),
    ({"timestamp": -5}, "timestamp must be >= 0"),
    ({"hour": 24}, "hour must be in 0..23"),
    ({"weekday": 7}, "weekday must be in 0..6"),
    ({"user_id": ""}, "user_id is empty"),
    ({"session_id": ""}, "session_id is empty"),
    ({"current_track_id": ""}, "current_track_id is empty"),
    ({"candidate_track_ids": [], "candidate_relationship": []}, "candidate_track_ids is empty"),
    ({"candidate_track_ids": ["t1", None, "t3"]}, "holds a null id"),
    (
        {
            "candidate_track_ids": ["a", "b", "c", "d", "e"],
            "candidate_relationship": [0.0] * 20,
            "chosen_track_id": "c",
        },
        "more than k=4",
    ),
    ({"chosen_index": 3}, "chosen_index out of range"),
    ({"chosen_index": -1}, "chosen_index out of range"),
    ({"chosen_track_id": "t1"}, "chosen_track_id != candidate_track_ids[chosen_index]"),
    ({"candidate_relationship": [0.1] * 11}, "candidate_relationship must hold"),
    ({"candidate_relationship": [math.nan] * 12}, "candidate_relationship has NaN/inf"),
    ({"user_taste": []}, "user_taste is empty"),
    ({"user_taste": [math.inf] * 5}, "user_taste has NaN/inf"),
    ({"behaviour_logp": 0.5}, "behaviour_logp must be finite and <= 0"),
    ({"behaviour_logp": math.nan}, "behaviour_logp must be finite and <= 0"),
    ({"listen_fraction": 1.5}, "listen_fraction must be in [0, 1]"),
    ({"listen_fraction": math.nan}, "listen_fraction must be in [0, 1]"),
    ({"skip_level": 4}, "skip_level must be in 0..3"),
    ({"reward": math.inf}, "reward must be finite"),
    ({"source": "elsewhere"}, "source must be one of"),
    ({"user_id": None}, "user_id is null"),
    ({"liked": None}, "liked is null"),
]


@pytest.mark.parametrize("changes, reason", BAD_ROWS, ids=[r for _, r in BAD_ROWS])
def test_bad_dict_row_is_rejected_with_reason(changes, reason):
    valid, rejections = validate_rows(
        [good_row(), good_row(**changes), good_row(position=1)], k=4, n_betas=4
    )
    assert valid.num_rows == 2
    assert len(rejections) == 1
    assert reason in rejections[0].reason
    assert rejections[0].row["source"] == good_row(**changes)["source"]


@pytest.mark.parametrize("changes, reason", BAD_ROWS, ids=[r for _, r in BAD_ROWS])
def test_bad_table_row_is_rejected_with_reason(changes, reason):
    table = pa.Table.from_pylist([good_row(), good_row(**changes)], schema=DECISION_SCHEMA)
    valid, rejections = validate_table(table, k=4, n_betas=4)
    expected = pa.Table.from_pylist([good_row()], schema=DECISION_SCHEMA).to_pylist()
    assert valid.to_pylist() == expected
    assert [reason in r.reason for r in rejections] == [True]


def test_missing_unknown_and_mistyped_fields_are_rejected_not_raised():
    row_missing = good_row()
    del row_missing["reward"]
    rows = [row_missing, good_row(extra=1), good_row(day="monday"), good_row()]
    valid, rejections = validate_rows(rows)
    assert valid.num_rows == 1
    reasons = [r.reason for r in rejections]
    assert "missing field(s) ['reward']" in reasons[0]
    assert "unknown field(s) ['extra']" in reasons[1]
    assert reasons[2].startswith("wrong type")


def test_optional_request_id_may_be_absent_or_set():
    row = good_row()
    del row["request_id"]
    valid, rejections = validate_rows([row, good_row(request_id="req-1")])
    assert not rejections and valid.column("request_id").to_pylist() == [None, "req-1"]


def test_several_reasons_are_all_reported():
    _, rejections = validate_rows([good_row(hour=30, skip_level=9)])
    assert "hour must be in 0..23" in rejections[0].reason
    assert "skip_level must be in 0..3" in rejections[0].reason


def test_table_with_wrong_columns_raises():
    table = pa.Table.from_pylist([good_row()], schema=DECISION_SCHEMA).drop_columns(["reward"])
    with pytest.raises(LogSchemaError, match="missing \\['reward'\\]"):
        validate_table(table)


def test_table_with_castable_types_is_conformed():
    table = pa.Table.from_pylist([good_row()], schema=DECISION_SCHEMA)
    table = table.set_column(2, "day", pa.array([1], pa.int64()))
    valid, rejections = validate_table(table)
    assert not rejections and valid.schema.field("day").type == pa.int32()


def test_organic_rows_validated():
    from rl.feedback.schema import ORGANIC_SCHEMA

    table = pa.Table.from_pylist(
        [
            {"user_id": "u1", "day": 0, "track_id": "t1", "minutes": 3.5, "streams": 1},
            {"user_id": "u1", "day": 0, "track_id": "t1", "minutes": -1.0, "streams": 1},
            {"user_id": "u1", "day": 0, "track_id": "t1", "minutes": 1.0, "streams": 0},
        ],
        schema=ORGANIC_SCHEMA,
    )
    valid, rejections = validate_organic_table(table)
    assert valid.num_rows == 1
    assert [r.reason for r in rejections] == [
        "minutes must be finite and >= 0",
        "streams must be >= 1",
    ]
