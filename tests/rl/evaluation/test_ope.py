"""Off-policy estimators on a logged bandit whose target value is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from rl.decision.observation import ObservationLayout, encode_context
from rl.evaluation.ope import (
    doubly_robust,
    effective_sample_size,
    evaluate_policy_offline,
    importance_weights,
    ips,
    snips,
)
from rl.feedback.offline_steps_files import LoggedDecisions

K = 4


def logged_bandit(n: int, seed: int = 0):
    """Bernoulli rewards with mean mu[s, a]; uniform-ish logging, a greedy-ish target."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.05, 0.95, size=(n, K))
    logits = rng.normal(size=(n, K))
    behaviour = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    target = 0.7 * np.eye(K)[mu.argmax(1)] + 0.3 / K
    actions = np.array([rng.choice(K, p=p) for p in behaviour])
    rewards = (rng.random(n) < mu[np.arange(n), actions]).astype(float)
    true_value = float((target * mu).mean(0).sum())  # E_s[sum_a pi(a|s) mu(s,a)]
    return mu, behaviour, target, actions, rewards, true_value


@pytest.mark.parametrize("estimator", ["ips", "snips", "dr_perfect", "dr_biased"])
def test_estimators_recover_known_value(estimator):
    mu, behaviour, target, actions, rewards, true_value = logged_bandit(20_000)
    b = behaviour[np.arange(len(actions)), actions]
    if estimator == "ips":
        est = ips(target, actions, b, rewards, n_bootstrap=300)
    elif estimator == "snips":
        est = snips(target, actions, b, rewards, n_bootstrap=300)
    elif estimator == "dr_perfect":
        est = doubly_robust(target, actions, b, rewards, mu, n_bootstrap=300)
    else:  # a wrong reward model: DR stays unbiased through the importance-weighted residual
        est = doubly_robust(target, actions, b, rewards, np.full_like(mu, 0.2), n_bootstrap=300)
    assert est.ci_low <= true_value <= est.ci_high
    # IPS has the widest interval here (ESS ~ 3,400 of 20,000 decisions).
    assert abs(est.value - true_value) < 0.04
    assert est.ci_high - est.ci_low < 0.08


def test_dr_with_good_model_is_tighter_than_ips():
    mu, behaviour, target, actions, rewards, _ = logged_bandit(5_000, seed=1)
    b = behaviour[np.arange(len(actions)), actions]
    width_ips = (lambda e: e.ci_high - e.ci_low)(ips(target, actions, b, rewards, 300))
    width_dr = (lambda e: e.ci_high - e.ci_low)(doubly_robust(target, actions, b, rewards, mu, 300))
    assert width_dr < width_ips


def test_effective_sample_size():
    assert effective_sample_size(np.ones(50)) == pytest.approx(50)
    assert effective_sample_size(np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="propensities"):
        importance_weights(np.ones((1, 2)) / 2, np.array([0]), np.array([0.0]))


def test_on_policy_logs_give_the_logged_mean():
    mu, behaviour, _, actions, rewards, _ = logged_bandit(3_000, seed=2)
    b = behaviour[np.arange(len(actions)), actions]
    est = ips(behaviour, actions, b, rewards, 100)
    assert est.value == pytest.approx(rewards.mean())
    assert est.effective_sample_size == pytest.approx(len(rewards))


def test_evaluate_policy_offline_on_observations():
    layout = ObservationLayout(k=K, latent_dim=3, betas=(0.5, 0.9))
    rng = np.random.default_rng(3)
    n = 6_000
    taste = rng.normal(size=(n, 3))
    cands = rng.normal(size=(n, K, 3))
    obs = layout.build(
        rng.normal(size=(n, 3)),
        taste,
        encode_context(np.zeros(n), np.zeros(n)),
        cands,
        np.zeros((n, K, 2)),
        np.ones((n, K)),
    )
    mu = 1.0 / (1.0 + np.exp(-(cands * taste[:, None, :]).sum(-1)))  # affinity -> reward mean
    behaviour = np.full((n, K), 1.0 / K)
    actions = rng.integers(0, K, n)
    rewards = (rng.random(n) < mu[np.arange(n), actions]).astype(float)
    target = np.eye(K)[mu.argmax(1)] * 0.9 + 0.1 / K
    true_value = float((target * mu).sum(1).mean())
    logged = LoggedDecisions(obs, actions, np.log(behaviour[:, 0]), rewards)
    estimates = evaluate_policy_offline(target, logged, layout, n_bootstrap=200)
    assert [e.estimator for e in estimates] == ["IPS", "SNIPS", "DR"]
    for est in estimates:
        assert est.ci_low - 0.01 <= true_value <= est.ci_high + 0.01, est
