"""Smoke tests of `encore offline-steps` and `encore demo` with tiny budgets (real Ray)."""

import pyarrow.parquet as pq
import pytest

from rl.cli import main
from rl.decision.observation import ObservationLayout


@pytest.fixture()
def embedding_dir(trained_embedding, tmp_path):
    path = tmp_path / "embedding"
    trained_embedding.save(str(path))
    return str(path)


@pytest.mark.ray
def test_offline_steps_converts_a_simulated_log(embedding_dir, tmp_path, capsys):
    log, out = str(tmp_path / "log"), str(tmp_path / "steps")
    assert main(["simulate", "--users", "40", "--days", "2", "--out", log,
                 "--embedding", embedding_dir, "--no-calibrate"]) == 0  # fmt: skip
    assert main(["offline-steps", "--log", log, "--out", out, "--embedding", embedding_dir]) == 0
    assert "offline steps to" in capsys.readouterr().out
    table = pq.read_table(out)  # the layout file beside the rows does not get in the way
    assert (tmp_path / "steps" / "_layout.json").exists()
    layout = ObservationLayout()
    assert table.num_rows > 0
    assert len(table.column("obs")[0].as_py()) == layout.size
    assert set(table.column_names) >= {"eps_id", "obs", "actions", "rewards", "action_logp"}
    # A second conversion into the same place is refused instead of mixing two logs.
    assert main(["offline-steps", "--log", log, "--out", out, "--embedding", embedding_dir]) == 2
    assert "already holds data" in capsys.readouterr().err

    # The long-term reward: a 1-day window on a 2-day log keeps day 0 only, says so, and
    # writes the reward definition beside the steps.
    long_out = str(tmp_path / "long")
    assert main(["offline-steps", "--log", log, "--out", long_out, "--embedding", embedding_dir,
                 "--reward", "return-days", "--return-window-days", "1", "--return-weight", "2"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "dropped (window past the log's end, day 2)" in printed
    long_table = pq.read_table(long_out)
    assert 0 < long_table.num_rows < table.num_rows
    assert (tmp_path / "long" / "_reward.json").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_demo_runs_end_to_end_with_a_tiny_budget(trained_embedding, tmp_path, capsys):
    trained_embedding.save(str(tmp_path / "embedding"))
    code = main(["demo", "--data", str(tmp_path), "--users", "60", "--days", "2",
                 "--iterations", "1", "--skip-serving"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "registered v0001" in out and "production -> v0001" in out
