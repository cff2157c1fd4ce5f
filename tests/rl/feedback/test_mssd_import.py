"""The MSSD importer on the real session rows (../shared/data/mssd_sample)."""

import csv

import numpy as np
import pytest

from rl.feedback.importers.mssd import (
    LISTEN_FRACTION_OF_LEVEL,
    UNKNOWN_CURRENT,
    default_mssd_uri,
    import_mssd,
    load_mssd,
    mssd_skip_shares,
    mssd_to_table,
)
from rl.feedback.log import read_decisions_table
from rl.feedback.schema import validate_table


@pytest.fixture(scope="module")
def raw_rows():
    with open(default_mssd_uri(), newline="") as handle:
        return list(csv.DictReader(handle))


def test_skip_flags_are_cumulative_in_the_real_rows(raw_rows):
    for row in raw_rows:
        flags = [row[name] == "True" for name in ("skip_1", "skip_2", "skip_3")]
        assert flags == sorted(flags)  # skip_1 => skip_2 => skip_3
        if row["not_skipped"] == "True":
            assert not any(flags)


def test_skip_shares_match_a_naive_count(raw_rows):
    def level(row):
        for index, name in enumerate(("skip_1", "skip_2", "skip_3")):
            if row[name] == "True":
                return index
        return 3

    counts = np.bincount([level(row) for row in raw_rows], minlength=4)
    shares = mssd_skip_shares()
    assert len(raw_rows) == 1180
    np.testing.assert_allclose(list(shares.values()), counts / counts.sum())
    assert shares["skip_1"] == pytest.approx(427 / 1180)


def test_import_real_rows_into_the_log_schema(tmp_path, raw_rows):
    result = import_mssd(str(tmp_path / "mssd"))
    assert result["written_rows"] == 1180 and result["quarantined_rows"] == 0
    assert result["sessions"] == 169
    table = read_decisions_table(str(tmp_path / "mssd"))
    assert table.num_rows == 1180
    frame = table.to_pandas().sort_values(["session_id", "position"])
    assert set(frame["source"]) == {"mssd"}
    expected_fraction = np.asarray(LISTEN_FRACTION_OF_LEVEL)[frame["skip_level"].to_numpy()]
    np.testing.assert_allclose(frame["listen_fraction"], expected_fraction, rtol=1e-6)
    assert (frame["listened"] == (frame["skip_level"] >= 2)).all()
    assert (frame["chosen_track_id"] == frame["candidate_track_ids"].str[0]).all()
    # The current track is the previous row of the session when that row is in the sample.
    by_key = {(r["session_id"], int(r["session_position"])): r["track_id_clean"] for r in raw_rows}
    for row in frame.head(200).itertuples():
        previous = by_key.get((row.session_id, row.position))  # position is 0-based = MSSD pos - 1
        assert row.current_track_id == (previous if previous is not None else UNKNOWN_CURRENT)
    assert frame["hour"].between(0, 23).all() and frame["weekday"].between(0, 6).all()


def test_import_is_valid_without_the_writer():
    valid, rejections = validate_table(mssd_to_table(load_mssd()), k=1, n_betas=4)
    assert valid.num_rows == 1180 and not rejections


def test_cli_import_mssd(tmp_path, capsys):
    from rl.cli import main

    assert main(["import-mssd", "--out", str(tmp_path / "mssd")]) == 0
    assert "1180 decision rows" in capsys.readouterr().out
