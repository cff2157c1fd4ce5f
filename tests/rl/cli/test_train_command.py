"""`encore train | models | promote | finetune | evaluate` as a user runs them."""

from __future__ import annotations

import pytest

from rl.cli import main
from rl.training.synthetic import synthetic_offline_steps


def test_commands_are_registered(capsys):
    main([])
    out = capsys.readouterr().out
    for command in ("train", "models", "promote", "finetune", "evaluate", "compare-policies"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--num-learners" in out and "--resume-run" in out and "--learner-resource" in out


def test_models_and_promote_on_empty_registry(tmp_path, capsys):
    registry = tmp_path / "registry"
    # A registry that is not there is a typo, not an empty registry.
    assert main(["models", "--registry", str(registry)]) == 2
    assert "no model registry at" in capsys.readouterr().err
    registry.mkdir()
    assert main(["models", "--registry", str(registry)]) == 0
    assert "no versions" in capsys.readouterr().out
    assert main(["promote", "v0001", "--registry", str(registry)]) == 2
    assert "refused" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow
def test_train_promote_finetune_evaluate(ray_local, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENCORE_DATA", str(tmp_path / "data"))
    registry = str(tmp_path / "registry")
    data = tmp_path / "steps"
    data.mkdir()
    synthetic_offline_steps(60, 5, seed=0).to_parquet(data / "day-0.parquet")
    small = ["--iterations", "2", "--batch-size", "64", "--updates-per-iteration", "2"]
    args = ["train", "--data", str(data), *small, "--hidden", "16", "--registry", registry]
    assert main([*args, "--promote"]) == 0
    out = capsys.readouterr().out
    assert "iter   2" in out and "samples/s" in out and "registered v0001" in out

    assert main(["models", "--registry", registry]) == 0
    assert "* v0001" in capsys.readouterr().out

    synthetic_offline_steps(40, 5, seed=1).to_parquet(data / "day-1.parquet")
    assert main(["finetune", "--data", str(data), "--iterations", "1", "--registry", registry]) == 0
    assert "registered v0002 (parent v0001, 200 new decisions)" in capsys.readouterr().out
    # The promotion gate: with a production version to compare with, held-out data or --force.
    assert main(["promote", "v0002", "--registry", registry]) == 2
    assert "--heldout" in capsys.readouterr().err
    gate = ["--heldout", str(data), "--margin", "100"]
    assert main(["promote", "v0002", *gate, "--registry", registry]) == 0
    assert "gate passed" in capsys.readouterr().out
    assert main(["models", "--registry", registry]) == 0
    assert "gate vs v0001" in capsys.readouterr().out
    # v0002's lineage has read day-0 and day-1: nothing new to fine-tune on.
    assert main(["finetune", "--data", str(data), "--iterations", "1", "--registry", registry]) == 2
    assert "no feedback" in capsys.readouterr().err
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    synthetic_offline_steps(50, 5, seed=7).to_parquet(heldout / "part.parquet")
    out_dir = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(heldout),
                "--bootstrap",
                "100",
                "--out",
                str(out_dir),
                "--registry",
                registry,
            ]
        )
        == 0
    )
    assert "| offline-ppo:v0002 (sampled) | DR |" in capsys.readouterr().out
    assert (out_dir / "ope.md").exists() and (out_dir / "ope.png").stat().st_size > 0


def test_train_config_checks_resume_and_learner_options():
    from rl.cli import build_parser
    from rl.cli.config_options import build_configs
    from rl.training.config import TrainConfig

    with pytest.raises(ValueError, match="checkpoint_every must be >= 1, got 0"):
        TrainConfig(checkpoint_every=0)
    with pytest.raises(ValueError, match="custom_resources_per_learner amounts must be > 0"):
        TrainConfig(custom_resources_per_learner={"encore_learner": 0})
    args = build_parser().parse_args(
        ["train", "--learner-resource", "encore_learner=1", "--learner-resource", "gpu_a=0.5"]
    )
    build_configs(args)
    assert args.train_config.custom_resources_per_learner == {"encore_learner": 1.0, "gpu_a": 0.5}
    config = TrainConfig(num_learners=3, custom_resources_per_learner={"encore_learner": 1})
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_learner_resources_reach_rllib():
    from rl.decision.observation import ObservationLayout
    from rl.training.config import TrainConfig
    from rl.training.episodes import EpisodeDataset
    from rl.training.train import rllib_config

    config = TrainConfig(num_learners=2, custom_resources_per_learner={"encore_learner": 1})
    algo_config = rllib_config(config, EpisodeDataset("/tmp/none", 1, 1), ObservationLayout())
    assert algo_config.num_learners == 2
    assert algo_config.custom_resources_per_learner == {"encore_learner": 1.0}


def test_resume_run_needs_work_dir(capsys):
    assert main(["train", "--resume-run", "--synthetic-sessions", "5"]) == 2
    assert "--work-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--learner-resource", "oops", "--synthetic-sessions", "5"])
    assert exit_info.value.code == 2 and "NAME=VALUE" in capsys.readouterr().err
