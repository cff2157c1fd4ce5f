"""The session reward against a slow per-row reference, and its config validation."""

import numpy as np
import pytest

from rl.feedback.reward import RewardConfig, compute_reward


def reference_reward(fraction: float, liked: bool, level: int, config: RewardConfig) -> float:
    if level == 3:
        listen_part = fraction
    else:
        listen_part = config.skip_penalties[level]
    return listen_part + (config.like_weight if liked else 0.0)


@pytest.mark.parametrize(
    "config", [RewardConfig(), RewardConfig(like_weight=100.0, skip_penalties=(-3.0, -1.0, -0.5))]
)
def test_compute_reward_matches_reference(config):
    rng = np.random.default_rng(0)
    fraction = rng.random(500).astype(np.float32)
    liked = rng.random(500) < 0.2
    level = rng.integers(0, 4, 500)
    expected = [
        reference_reward(f, lk, lv, config)
        for f, lk, lv in zip(fraction, liked, level, strict=True)
    ]
    np.testing.assert_allclose(compute_reward(fraction, liked, level, config), expected, rtol=1e-6)


def test_reward_shape_skips_negative_and_immediate_worst():
    fraction = np.array([0.02, 0.2, 0.8, 1.0, 0.6])
    rewards = compute_reward(fraction, np.zeros(5, bool), np.array([0, 1, 2, 3, 3]))
    assert rewards[0] < rewards[1] < rewards[2] < 0 < rewards[4] < rewards[3]
    assert rewards[3] == pytest.approx(1.0)
    liked = compute_reward([1.0], [True], [3])
    assert liked[0] == pytest.approx(1.0 + RewardConfig().like_weight)


def test_reward_config_defaults_documented_values():
    config = RewardConfig()
    assert config.like_weight == 10.0
    assert config.skip_penalties == (-1.0, -0.5, -0.2)
    assert RewardConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"like_weight": -1.0}, "like_weight must be finite and >= 0"),
        ({"skip_penalties": (-1.0, -0.5)}, "needs 3 values"),
        ({"skip_penalties": (-1.0, 0.5, -0.1)}, "must all be finite and < 0"),
        ({"skip_penalties": (-0.1, -0.5, -1.0)}, "must be increasing"),
    ],
)
def test_reward_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**kwargs)


def test_compute_reward_rejects_unknown_skip_level():
    with pytest.raises(ValueError, match="skip_level must be in 0..3"):
        compute_reward([0.5], [False], [4])
