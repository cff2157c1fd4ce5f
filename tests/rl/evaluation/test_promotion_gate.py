"""The promotion gate on a synthetic log whose truth is known: it accepts a better policy,
refuses a worse one (unless forced), and its paired DR difference matches the truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from rl.decision.observation import ObservationLayout
from rl.decision.policies import masked_softmax, sample_actions
from rl.evaluation.promotion_gate import GateConfig, gate_promotion, paired_dr_difference

LAYOUT = ObservationLayout(k=4, latent_dim=2, song_feature_dim=1)


@dataclass
class Logged:
    obs: np.ndarray
    actions: np.ndarray
    behaviour_logp: np.ndarray
    rewards: np.ndarray


class FeaturePolicy:
    """Softmax over sign * the candidates' song feature (the known reward driver)."""

    def __init__(self, sign: float, temperature: float = 0.1, name: str = "p") -> None:
        self.sign, self.temperature, self.name = sign, temperature, name

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        feature = LAYOUT.split(obs)["candidate_song_features"][..., 0]
        return masked_softmax(self.sign * feature / self.temperature, np.ones_like(feature, bool))


def expected_reward(policy, obs) -> float:
    """The truth: E[r | s, a] = feature of a."""
    feature = LAYOUT.split(obs)["candidate_song_features"][..., 0]
    return float((policy.action_probabilities(obs) * feature).sum(1).mean())


def synthetic_log(n: int = 6000, seed: int = 0) -> Logged:
    rng = np.random.default_rng(seed)
    feature = rng.normal(size=(n, 4, 1))
    obs = LAYOUT.build(
        rng.normal(size=(n, 2)), rng.normal(size=(n, 2)), rng.normal(size=(n, 4)),
        rng.normal(size=(n, 4, 2)), np.zeros((n, 4, LAYOUT.n_betas)), np.ones((n, 4)), feature,
    )  # fmt: skip
    behaviour = np.full((n, 4), 0.25)
    actions, logp = sample_actions(behaviour, rng)
    rewards = feature[np.arange(n), actions, 0] + rng.normal(scale=0.5, size=n)
    return Logged(obs, actions, logp, rewards)


def test_paired_difference_recovers_the_truth() -> None:
    log = synthetic_log()
    better, worse = FeaturePolicy(1.0), FeaturePolicy(-1.0)
    cand, prod, diff, (low, high) = paired_dr_difference(
        better.action_probabilities(log.obs), worse.action_probabilities(log.obs),
        log, LAYOUT, n_bootstrap=300,
    )  # fmt: skip
    truth = expected_reward(better, log.obs) - expected_reward(worse, log.obs)
    assert low < truth < high
    assert diff == pytest.approx(cand - prod)
    assert low > 0


def test_gate_accepts_better_refuses_worse_and_can_be_forced() -> None:
    log = synthetic_log(seed=1)
    production = FeaturePolicy(1.0, temperature=2.0, name="production")  # mildly good
    better, worse = FeaturePolicy(1.0, name="better"), FeaturePolicy(-1.0, name="worse")
    config = GateConfig(margin=0.05, n_bootstrap=200)
    accepted = gate_promotion(better, production, log, LAYOUT, "v2", "v1", config)
    assert accepted.passed and accepted.promoted and accepted.difference > 0
    refused = gate_promotion(worse, production, log, LAYOUT, "v3", "v1", config)
    assert not refused.passed and not refused.promoted
    assert refused.difference < -config.margin and refused.difference_ci[1] < 0
    forced = gate_promotion(worse, production, log, LAYOUT, "v3", "v1", config, force=True)
    assert forced.promoted and forced.forced and not forced.passed
    state = refused.to_dict()
    assert state["passed"] is False and len(state["difference_ci"]) == 2
    assert "refused" in refused.summary()


def test_a_tie_within_the_margin_passes() -> None:
    log = synthetic_log(seed=2)
    same = FeaturePolicy(1.0, temperature=0.5)
    evidence = gate_promotion(same, same, log, LAYOUT, "v2", "v1", GateConfig(margin=0.0))
    assert evidence.difference == pytest.approx(0.0) and evidence.passed


def test_gate_config_is_validated() -> None:
    with pytest.raises(ValueError, match="margin"):
        GateConfig(margin=-0.1)


def test_promote_through_gate_on_a_registry(tmp_path) -> None:
    """The first version needs no gate; the next needs held-out data (or --force); the
    evidence lands in its manifest."""
    from rl.evaluation.promotion_gate import promote_through_gate
    from rl.registry import ModelRegistry
    from rl.training.config import TrainConfig
    from rl.training.module import build_module
    from rl.training.synthetic import synthetic_offline_steps

    layout = ObservationLayout(k=4, latent_dim=5)
    registry = ModelRegistry(str(tmp_path / "registry"))
    versions = []
    for seed in (0, 1):
        import torch

        torch.manual_seed(seed)
        root = tmp_path / f"run{seed}"
        build_module(layout, hidden_sizes=(8,)).save_to_path(
            str(root / "learner_group" / "learner" / "rl_module" / "default_policy")
        )
        versions.append(
            registry.register(
                str(root), algo="offline-ppo", layout=layout, data={}, metrics={},
                train_config=TrainConfig(hidden_sizes=(8,)).to_dict(),
            ).version
        )  # fmt: skip
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    synthetic_offline_steps(40, 5, layout=layout, seed=3).to_parquet(heldout / "part.parquet")
    assert promote_through_gate(registry, versions[0], None, report=lambda m: None) is None
    with pytest.raises(PermissionError, match="--heldout"):
        promote_through_gate(registry, versions[1], None)
    assert registry.production_version() == versions[0]
    refused_margin = -1e9  # impossible to meet: a refusal, then --force
    with pytest.raises(ValueError, match="margin"):
        promote_through_gate(registry, versions[1], str(heldout), margin=refused_margin)
    evidence = promote_through_gate(
        registry, versions[1], str(heldout), margin=1e9, report=lambda m: None
    )
    assert evidence is not None and evidence.passed
    assert registry.production_version() == versions[1]
    assert registry.get(versions[1]).data["promotion_gate"]["production"] == versions[0]
