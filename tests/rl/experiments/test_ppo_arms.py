"""PPO arms of the A/B test: config checks and the policy diagnostics against formulas.
(Training the arms end to end runs in `encore ab-test --train-ppo`; the conversion and the
RLlib training it calls are tested in test_return_reward.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from rl.decision.observation import ObservationLayout
from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy
from rl.experiments.ppo_arms import PPOArmsConfig, policy_diagnostics
from rl.training.config import TrainConfig
from rl.training.synthetic import synthetic_offline_steps


def test_diagnostics_match_their_formulas(tmp_path):
    layout = ObservationLayout()
    steps = synthetic_offline_steps(n_sessions=40, session_length=5, seed=3)
    path = tmp_path / "part-0.parquet"
    steps.to_parquet(path)
    policy = MyopicListenPolicy(ListenProbabilityModel(layout, 1.0))
    found = policy_diagnostics(policy, [str(path)], layout)

    obs = np.stack(steps["obs"].to_numpy()).astype(np.float32)
    actions = steps["actions"].to_numpy()
    probabilities = policy.action_probabilities(obs)
    weights = probabilities[np.arange(len(obs)), actions] / np.exp(steps["action_logp"].to_numpy())
    mask = layout.split(obs)["candidate_mask"] > 0
    p = np.where(mask, probabilities, 1.0)
    assert found["decisions"] == len(steps)
    assert found["effective_sample_size"] == pytest.approx(
        weights.sum() ** 2 / (weights**2).sum(), rel=1e-5
    )
    assert found["mean_entropy"] == pytest.approx(float(-(p * np.log(p)).sum(1).mean()), rel=1e-5)
    assert found["uniform_entropy"] == pytest.approx(float(np.log(mask.sum(1)).mean()))
    assert found["argmax_is_logged_action"] == pytest.approx(
        float((probabilities.argmax(1) == actions).mean())
    )
    assert 0 < found["effective_sample_size"] <= len(steps)


def test_config_says_what_is_wrong():
    with pytest.raises(ValueError, match="rewards must be a non-empty subset"):
        PPOArmsConfig(rewards=("clicks",))
    with pytest.raises(ValueError, match="PPO arms train offline-ppo, got algo 'bc'"):
        PPOArmsConfig(train=TrainConfig(algo="bc"))
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        PPOArmsConfig(partitions=0)
