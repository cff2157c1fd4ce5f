"""Gymnasium face of the simulator: one user's listening session is one episode.

Where it sits: RLlib (or any Gymnasium agent) can train or evaluate online against the
simulator through this Env; offline training uses the logged data instead. The Env
reuses the simulator's own pieces (corpus, user model, candidate table, observation
layout), so an observation here is exactly what the logging policy and the served Scorer
see.

- observation: ``ObservationLayout.size`` float32 vector (Box, unbounded latents).
- action: Discrete(k), the index of the candidate to play next. An index that points at a
  padding slot (fewer than k candidates left) plays the first real candidate instead.
- reward: the session reward of the user's response (rl/feedback/reward.py).
- episode: reset picks a user of a small population and opens a session on that user's
  next active day (each user keeps its own day clock, advanced by a geometric gap with
  the user's activity probability, so relationship states decay as between real
  sessions); the episode terminates when the user ends the session (at its planned
  length, or earlier by a quit, more likely after a run of skips; the session's mood
  carries from track to track: rl/simulator/sessions.py) and is truncated at
  ``max_session_length``.
  ``reset(seed=...)`` also redraws the population from that seed (determinism).
  After each episode that user's day ends (organic returns, relationship update), so the
  population accumulates history across episodes. Churn is off inside the Env.

Construct with an RLlib-style ``env_config`` dict: ``latents`` (N, D) and ``track_ids``
(default: a random toy corpus of ``n_songs``), ``durations_s``, ``n_users``, ``k``,
``seed``, ``simulator_config`` (SimulatorConfig), ``reward_config`` (RewardConfig).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rl.decision.observation import ObservationLayout
from rl.feedback.reward import EARLY_SKIP, RewardConfig, compute_reward
from rl.simulator.config import SimulatorConfig
from rl.simulator.corpus import build_corpus
from rl.simulator.recommender import observations_from_corpus, retrieve_candidates
from rl.simulator.sessions import next_mood, planned_lengths, quit_probability
from rl.simulator.simulation import HOUR_PROBABILITIES
from rl.simulator.user import (
    activity_probability,
    initial_state,
    next_response,
    next_state,
    record_streams,
    relationship_of,
)


class ListeningSessionEnv(gym.Env):
    """One simulated listening session per episode (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        env_config = dict(env_config or {})
        seed = int(env_config.get("seed", 0))
        setup_rng = np.random.default_rng(seed)
        latents = env_config.get("latents")
        if latents is None:
            n_songs = int(env_config.get("n_songs", 500))
            latents = setup_rng.standard_normal((n_songs, 5)).astype(np.float32)
        latents = np.asarray(latents, np.float32)
        track_ids = env_config.get("track_ids")
        if track_ids is None:
            track_ids = [f"song{i:06d}" for i in range(len(latents))]
        self.k = int(env_config.get("k", 4))
        config = env_config.get("simulator_config") or SimulatorConfig()
        self.config = config.replace(churn_rate=0.0)
        self.reward_config = env_config.get("reward_config") or RewardConfig()
        self.layout = ObservationLayout(k=self.k, latent_dim=latents.shape[1])
        self.betas = np.asarray(self.layout.betas, np.float32)
        self.corpus = build_corpus(
            latents,
            track_ids,
            self.k,
            self.config,
            setup_rng,
            durations_s=env_config.get("durations_s"),
        )
        self.n_users = int(env_config.get("n_users", 256))
        self.state = initial_state(
            self.n_users, self.corpus, self.config, self.layout.betas, setup_rng
        )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.layout.size,), np.float32)
        self.action_space = gym.spaces.Discrete(self.k)
        self._rng = np.random.default_rng(seed + 1)
        self.user_day = np.zeros(self.n_users, np.int64)
        self.day = 0
        self._user = np.zeros(1, np.int64)
        self._in_session = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            # An explicit seed restarts the population too, so (seed, actions) fully
            # determine the episode, as Gymnasium's determinism check expects.
            self._rng = np.random.default_rng(seed)
            self.state = initial_state(
                self.n_users, self.corpus, self.config, self.layout.betas, self._rng
            )
            self.user_day[:] = 0
            self._in_session = False
        if self._in_session:
            self._end_user_day()
        rng = self._rng
        self._user = rng.integers(0, self.n_users, 1)
        user = int(self._user[0])
        # At least one session a month, so a rare user's state does not decay to nothing.
        activity = float(activity_probability(self.state, self.config, False, self._user)[0])
        self.user_day[user] += int(rng.geometric(max(activity, 1 / 30)))
        self.day = int(self.user_day[user])
        self._weekday = self.day % 7
        self._hour = rng.choice(24, size=1, p=HOUR_PROBABILITIES)
        pool = self.state.home_pool[self._user[0]]
        self._current = np.array([pool[rng.integers(0, len(pool))]], np.int64)
        self._history = np.full((1, self.config.history_length), -1, np.int64)
        self._history[0, 0] = self._current[0]
        self._position = 0
        self._mood = (self.config.mood_start_std * rng.standard_normal(1)).astype(np.float32)
        self._skip_run = np.zeros(1, np.int32)
        self._planned = int(planned_lengths(self.config, 1, rng)[0])
        self._in_session = True
        return self._observe(), {"user": int(self._user[0]), "day": self.day}

    def _observe(self) -> np.ndarray:
        self._candidates = retrieve_candidates(
            self.corpus.neighbours, self._current, self._history, self.k
        )
        self._relationship = relationship_of(
            self.state, self._user, self._candidates, self.day, self.betas
        )
        obs = observations_from_corpus(
            self.layout, self.corpus, self._current, self.state.taste[self._user], self._hour,
            self._weekday, self._candidates, self._relationship,
        )  # fmt: skip
        return obs[0]

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._in_session:
            raise RuntimeError("call reset() before step()")
        action = int(action)
        if not 0 <= action < self.k:
            raise ValueError(f"action must be in [0, {self.k}), got {action}")
        valid = self._candidates[0] >= 0
        played_index = action if valid[action] else int(np.argmax(valid))
        chosen = self._candidates[:, played_index]
        response = next_response(
            self.state, self.corpus, self.config, self._user, self._current, chosen,
            self._relationship[:, played_index, -1], self._weekday >= 5, self._rng,
            mood=self._mood,
        )  # fmt: skip
        record_streams(
            self.state,
            self.corpus,
            self._user,
            chosen,
            response.listened,
            response.minutes,
            self.day,
            self.betas,
        )
        reward = float(
            compute_reward(
                response.listen_fraction, response.liked, response.skip_level, self.reward_config
            )[0]
        )
        self._position += 1
        # The same within-session dynamics as the simulator (rl/simulator/sessions.py).
        skipped = response.skip_level <= EARLY_SKIP
        self._mood = next_mood(self._mood, skipped, self.config)
        self._skip_run = np.where(skipped, self._skip_run + 1, 0).astype(np.int32)
        self.state.today_plays[self._user] += 1
        self.state.today_satisfaction[self._user] += float(
            np.where(skipped, -1.0, response.listened.astype(np.float32))[0]
            + self.config.like_satisfaction * response.liked[0]
        )
        quits = self._rng.random() < quit_probability(self._skip_run, self.config)[0]
        terminated = bool(quits or self._position >= self._planned)
        truncated = not terminated and self._position >= self.config.max_session_length
        self._history = np.concatenate([chosen[:, None], self._history[:, :-1]], axis=1)
        self._current = chosen
        obs = self._observe()
        if not obs[self.layout.size - self.k :].any():  # nothing left to recommend
            truncated = not terminated
        info = {
            "played_index": played_index,
            "track_id": str(self.corpus.track_ids[chosen[0]]),
            "skip_level": int(response.skip_level[0]),
            "listen_fraction": float(response.listen_fraction[0]),
            "liked": bool(response.liked[0]),
            "listened": bool(response.listened[0]),
        }
        if terminated or truncated:
            self._end_user_day()
        return obs, reward, terminated, truncated, info

    def _end_user_day(self) -> None:
        next_state(
            self.state,
            self.corpus,
            self.config,
            self.betas,
            self._user,
            self.day,
            self._rng,
            users=self._user,
        )
        self._in_session = False
