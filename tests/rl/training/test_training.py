"""A real RLlib offline PPO run on a small generated log (Ray Data + RLlib, ~1 minute)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl.decision.observation import ObservationLayout
from rl.training.config import TrainConfig
from rl.training.episodes import episodes_from_steps, pack_episode, unpack_episode
from rl.training.synthetic import synthetic_offline_steps
from rl.training.train import module_checkpoint_uri, train

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def steps_uri(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("steps")
    synthetic_offline_steps(n_sessions=120, session_length=6, seed=1).to_parquet(
        directory / "part-0.parquet"
    )
    return str(directory)


def test_session_episodes_round_trip():
    steps = synthetic_offline_steps(n_sessions=3, session_length=4, seed=2)
    episodes = episodes_from_steps(steps.sample(frac=1.0, random_state=0))  # any row order
    assert [len(e) for e in episodes] == [4, 4, 4]
    episode = unpack_episode(pack_episode(episodes[0]))
    assert episode.is_terminated
    first = steps[steps.eps_id == episode.id_].sort_values("t")
    np.testing.assert_array_equal(episode.get_actions(), first["actions"].to_numpy())
    np.testing.assert_allclose(
        episode.get_extra_model_outputs("action_logp"), first["action_logp"].to_numpy()
    )
    assert episode.get_extra_model_outputs("session_step").tolist() == [0, 1, 2, 3]


def test_offline_ppo_lowers_loss_and_checkpoint_reloads(ray_local, steps_uri, tmp_path):
    from ray.rllib.core.rl_module.rl_module import RLModule

    layout = ObservationLayout()
    config = TrainConfig(
        iterations=4, train_batch_size=128, updates_per_iteration=6, hidden_sizes=(32, 32), lr=1e-3
    )
    run = train(config, steps_uri, layout, str(tmp_path / "run"))
    assert run.episodes.num_sessions == 120 and run.episodes.num_steps == 720
    first, last = run.history[0].losses, run.history[-1].losses
    assert set(first) >= {"total_loss", "policy_loss", "vf_loss", "entropy", "mean_ratio"}
    assert last["total_loss"] < first["total_loss"]
    assert last["vf_loss"] < first["vf_loss"]

    restored = RLModule.from_checkpoint(module_checkpoint_uri(run.checkpoint_uri))
    for name, value in restored.get_state().items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(run.module_weights[name]))
    again = RLModule.from_checkpoint(module_checkpoint_uri(run.checkpoint_uri))
    obs = torch.from_numpy(
        synthetic_offline_steps(n_sessions=2, session_length=3, seed=5)["obs"]
        .explode()
        .to_numpy(np.float32)
        .reshape(6, -1)
    )
    with torch.no_grad():
        torch.testing.assert_close(
            restored.candidate_logits(obs), again.candidate_logits(obs), rtol=0, atol=0
        )
        torch.testing.assert_close(
            restored.state_values(obs), again.state_values(obs), rtol=0, atol=0
        )


class NodeLost(RuntimeError):
    """Stands for the node dying after an iteration."""


def test_interrupted_run_resumes_from_latest_checkpoint(ray_local, steps_uri, tmp_path):
    from ray.rllib.core.rl_module.rl_module import RLModule

    from rl import storage
    from rl.registry import ModelRegistry
    from rl.training.lifecycle import register_run
    from rl.training.train import latest_checkpoint

    layout = ObservationLayout()
    config = TrainConfig(
        iterations=4,
        checkpoint_every=1,
        train_batch_size=64,
        updates_per_iteration=2,
        hidden_sizes=(16,),
        lr=1e-3,
    )
    work = str(tmp_path / "run")

    def lose_node_after_two(report):
        if report.iteration == 2:
            raise NodeLost

    with pytest.raises(NodeLost):
        train(config, steps_uri, layout, work, on_iteration=lose_node_after_two)
    latest = latest_checkpoint(work)
    assert latest["iteration"] == 2 and latest["checkpoint"] == "iter_0002"
    assert storage.list_dir(storage.join(work, "checkpoints")) == [
        "LATEST.json",
        "iter_0001",
        "iter_0002",
    ]
    saved = RLModule.from_checkpoint(module_checkpoint_uri(latest["checkpoint_uri"])).get_state()
    # A fresh run may not silently overwrite the interrupted one.
    with pytest.raises(FileExistsError):
        train(config, steps_uri, layout, work)
    with pytest.raises(ValueError, match="lr"):
        train(
            TrainConfig(**{**config.to_dict(), "lr": 1e-2}),
            steps_uri,
            layout,
            work,
            resume_run=True,
        )

    resumed_iterations = []
    run = train(
        config,
        steps_uri,
        layout,
        work,
        resume_run=True,
        on_iteration=lambda r: resumed_iterations.append(r.iteration),
    )
    assert resumed_iterations == [3, 4]  # continued at iteration 3, not from scratch
    assert run.resumed_from_iteration == 2
    for name, value in saved.items():  # ... from the weights saved at iteration 2
        np.testing.assert_array_equal(np.asarray(run.start_weights[name]), np.asarray(value))
    registry = ModelRegistry(str(tmp_path / "registry"))
    files = [storage.join(steps_uri, "part-0.parquet")]
    entry = register_run(registry, run, config, files, layout)
    assert [h["iteration"] for h in entry.history] == [1, 2, 3, 4]
    assert entry.metrics["resumed_from_iteration"] == 2.0
    assert entry.metrics["iterations"] == 4.0
    assert latest_checkpoint(work)["iteration"] == 4
    # The version holds the weights trained on from iteration 2's checkpoint onwards.
    final = RLModule.from_checkpoint(registry.module_uri(entry.version)).get_state()
    assert any(not np.array_equal(final[n], saved[n]) for n in saved)
