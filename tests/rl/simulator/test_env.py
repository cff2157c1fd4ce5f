"""The Gymnasium face: passes check_env, episodes are sessions, seeds reproduce them."""

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rl.simulator.env import ListeningSessionEnv


def test_check_env_passes():
    env = ListeningSessionEnv({"seed": 0, "n_songs": 300, "n_users": 32})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unbounded latent Box is intended
        check_env(env, skip_render_check=True)


def rollout(env, seed, episodes=20):
    env.reset(seed=seed)
    trajectory = []
    for _ in range(episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            action = int(np.argmax(obs[-env.k :] * np.arange(env.k, 0, -1)))
            obs, reward, terminated, truncated, info = env.step(action)
            trajectory.append((reward, info["track_id"], info["skip_level"]))
            done = terminated or truncated
    return trajectory


def test_episodes_are_sessions_with_consistent_rewards():
    env = ListeningSessionEnv({"seed": 1, "n_songs": 400, "n_users": 16})
    from rl.feedback.reward import compute_reward

    obs, info = env.reset(seed=5)
    assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
    lengths, steps = [], 0
    for _ in range(50):
        env.reset()
        done, length = False, 0
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            expected = compute_reward(
                [info["listen_fraction"]], [info["liked"]], [info["skip_level"]]
            )[0]
            assert reward == pytest.approx(float(expected))
            length += 1
            done = terminated or truncated
        lengths.append(length)
        steps += length
    assert 1 <= min(lengths) and max(lengths) <= env.config.max_session_length
    assert np.mean(lengths) > 1.5
    assert env.state.library_days_active.sum() > 0  # users' days end between episodes


def test_same_seed_same_trajectory():
    config = {"seed": 2, "n_songs": 300, "n_users": 16}
    assert rollout(ListeningSessionEnv(config), 9) == rollout(ListeningSessionEnv(config), 9)
    assert rollout(ListeningSessionEnv(config), 9) != rollout(ListeningSessionEnv(config), 10)


def test_action_on_padding_plays_first_real_candidate_and_bad_action_raises():
    env = ListeningSessionEnv({"seed": 3, "n_songs": 300})
    env.reset(seed=0)
    env._candidates[0, 2:] = -1  # only two candidates left
    _, _, _, _, info = env.step(3)
    assert info["played_index"] == 0
    env.reset()
    with pytest.raises(ValueError, match="action must be in"):
        env.step(7)
