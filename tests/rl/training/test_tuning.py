"""`encore tune`: Ray Tune trials of offline PPO selected on held-out DR (slow: two tiny
trials end to end), and the settings' validation and report (fast)."""

from __future__ import annotations

import csv
import json

import pytest

from rl.training.tuning import TrialResult, TuneSettings, trial_train_config, write_report


def test_settings_refuse_bad_ranges_and_the_first_point_is_the_defaults():
    with pytest.raises(ValueError, match="lr_range must be > 0"):
        TuneSettings(lr_range=(0.0, 1e-3))
    with pytest.raises(ValueError, match="low <= high"):
        TuneSettings(clip_range=(0.4, 0.1))
    with pytest.raises(ValueError, match=r"gamma_range and lambda_range must lie in \[0, 1\]"):
        TuneSettings(gamma_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="return_weights must be >= 0"):
        TuneSettings(return_weights=(-1.0,))
    settings = TuneSettings(iterations=3)
    point = settings.default_point()
    config = trial_train_config(settings.base_train_config(), point)
    assert config.iterations == 3 and config.lr == 3e-4 and config.entropy_coeff == 0.01
    assert point["return_weight"] == 0.0
    with pytest.raises(ValueError):
        trial_train_config(settings.base_train_config(), {**point, "clip": -1.0})


def _trial(name, dr, low, high, **point):
    base = TuneSettings().default_point()
    return TrialResult(name, {**base, **point}, dr, low, high, 1.3, 10.0)


def test_report_picks_the_best_held_out_estimate_and_compares_with_the_defaults(tmp_path):
    settings = TuneSettings()
    trials = [
        _trial("defaults", 0.50, 0.45, 0.55),
        _trial("better", 0.60, 0.56, 0.64, lr=1e-3),
        _trial("worse", 0.40, 0.35, 0.45, lr=2e-3),
    ]
    report = write_report(settings, trials, "log", "heldout", str(tmp_path))
    assert report.chosen.trial_id == "better" and report.defaults.trial_id == "defaults"
    chosen = json.loads((tmp_path / "chosen.json").read_text())
    assert chosen["chosen"]["lr"] == 1e-3 and chosen["chosen_interval_above_defaults"]
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [r["trial"] for r in rows] == ["better", "defaults", "worse"]
    assert "(defaults)" in (tmp_path / "trials.md").read_text()
    # A winner whose interval reaches below the defaults' estimate does not "beat" them.
    trials[1] = _trial("better", 0.52, 0.47, 0.57, lr=1e-3)
    again = write_report(settings, trials, "log", "heldout", str(tmp_path / "again"))
    assert not again.chosen_json["chosen_interval_above_defaults"]


@pytest.mark.ray
@pytest.mark.slow
def test_two_tiny_trials_end_to_end(ray_local, tmp_path, trained_embedding, monkeypatch, capsys):
    from rl.cli import main
    from rl.feedback.log import FeedbackLogWriter
    from rl.simulator.real_catalog import build_simulator
    from rl.simulator.simulation import Simulator

    monkeypatch.setenv("ENCORE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(
        "rl.songs.embedding.ensure_song_embedding", lambda *a, **k: trained_embedding
    )
    built = build_simulator(60, seed=0, calibrate=False)
    heldout = Simulator(built.corpus, 30, built.policy, built.layout, seed=5)
    for simulator, name in ((built.simulator, "log"), (heldout, "heldout")):
        with FeedbackLogWriter(str(tmp_path / name), k=4, n_betas=4) as writer:
            simulator.run(3, writer=writer)
    out = tmp_path / "tune"
    code = main(
        ["tune", "--log", str(tmp_path / "log"), "--heldout", str(tmp_path / "heldout"),
         "--trials", "2", "--iterations", "1", "--train-batch-size", "128",
         "--updates-per-iteration", "2", "--bootstrap", "20", "--return-weights", "0", "1",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    chosen = json.loads((out / "chosen.json").read_text())
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 2
    assert chosen["defaults"] is not None  # the first trial is TrainConfig's defaults
    best = max(rows, key=lambda r: float(r["dr"]))
    assert float(best["dr"]) == pytest.approx(chosen["chosen"]["dr"], abs=1e-4)
    for row in rows:
        assert float(row["dr_low"]) <= float(row["dr"]) <= float(row["dr_high"])
    assert "chosen:" in capsys.readouterr().out
