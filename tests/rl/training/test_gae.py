"""GAE over session segments against a naive per-session double loop."""

from __future__ import annotations

import numpy as np
import pytest

from rl.training.gae import generalized_advantages, segment_ends


def naive_gae(rewards, values, next_values, terminateds, ends, gamma, lam):
    """A_t = sum_{l>=0} (gamma*lam)^l delta_{t+l} within the segment, written out."""
    n = len(rewards)
    deltas = [
        rewards[t] + gamma * (0.0 if terminateds[t] else next_values[t]) - values[t]
        for t in range(n)
    ]
    advantages = np.zeros(n)
    for t in range(n):
        total, weight, u = 0.0, 1.0, t
        while True:
            total += weight * deltas[u]
            if ends[u]:
                break
            weight *= gamma * lam
            u += 1
        advantages[t] = total
    return advantages


def sessions_batch(rng, lengths, cut_last=False):
    steps, terminated = [], []
    for length in lengths:
        steps += list(range(length))
        terminated += [False] * (length - 1) + [True]
    if cut_last:  # the batch ends mid-session
        terminated[-1] = False
    return np.array(steps), np.array(terminated)


@pytest.mark.parametrize("gamma,lam", [(0.9, 0.95), (1.0, 1.0), (0.5, 0.0), (0.99, 0.5)])
@pytest.mark.parametrize("cut_last", [False, True])
def test_gae_matches_naive_loop(gamma, lam, cut_last):
    rng = np.random.default_rng(0)
    steps, terminated = sessions_batch(rng, [5, 1, 7, 3], cut_last)
    n = len(steps)
    rewards, values, next_values = rng.normal(size=(3, n))
    ends = segment_ends(steps, terminated)
    advantages, targets = generalized_advantages(
        rewards, values, next_values, terminated, ends, gamma, lam
    )
    expected = naive_gae(rewards, values, next_values, terminated, ends, gamma, lam)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, expected + values, rtol=1e-5, atol=1e-5)


def test_lambda_one_gives_discounted_returns_on_whole_sessions():
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    steps, terminated = np.array([0, 1, 2, 0, 1]), np.array([0, 0, 1, 0, 1], bool)
    values = np.array([0.3, -0.2, 0.5, 0.1, 0.9])
    next_values = np.array([-0.2, 0.5, 0.0, 0.9, 0.0])  # V(s_{t+1}) within each session
    _, targets = generalized_advantages(
        rewards, values, next_values, terminated, segment_ends(steps, terminated), 0.5, 1.0
    )
    np.testing.assert_allclose(targets, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 4 + 0.5 * 5, 5])


def test_segment_ends_breaks_on_step_gaps_and_unchained_rows():
    steps = np.array([0, 1, 2, 5, 6, 0])
    terminated = np.array([0, 0, 0, 0, 1, 0], bool)
    assert segment_ends(steps, terminated).tolist() == [False, False, True, False, True, True]
    assert segment_ends(steps, terminated, chain_steps=False).all()


def test_truncated_segment_bootstraps_from_next_value():
    # One non-terminal row alone: TD(0) target r + gamma V(s').
    adv, target = generalized_advantages(
        np.array([1.0]),
        np.array([0.5]),
        np.array([2.0]),
        np.array([False]),
        np.array([True]),
        0.9,
        0.95,
    )
    assert target[0] == pytest.approx(1.0 + 0.9 * 2.0)
    assert adv[0] == pytest.approx(1.0 + 0.9 * 2.0 - 0.5)
