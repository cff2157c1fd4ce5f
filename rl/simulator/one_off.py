"""One-off recommendations in the simulator: the A/B harness's hook into ``Simulator``.

Where it sits: ``Simulator`` (rl/simulator/simulation.py, the day loop) inherits these
methods. ``recommend_once`` makes one recommendation per user today, outside any
listening session, books the response, optionally logs it as a one-step decision row, and
follows the song for a window of days; the day loop calls ``_update_followed`` before each
day's end, and ``followed_outcomes`` reads the books (rl/experiments/ab_test.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from rl.feedback.reward import RewardConfig, compute_reward
from rl.simulator.config import SimulatorConfig
from rl.simulator.corpus import Corpus
from rl.simulator.metrics import (
    EPOCH_START_S,
    DecisionBuffer,
    FollowedRecommendations,
    OneOffRecommendation,
)
from rl.simulator.user import (
    Response,
    UserState,
    library_slots,
    listen_utility_mean,
    next_response,
    record_streams,
    relationship_of,
    stream_probability,
)

if TYPE_CHECKING:
    from rl.feedback.log import FeedbackLogWriter


def _checked_arguments(
    users: np.ndarray,
    items: np.ndarray,
    window: int,
    arm: str | Sequence[str],
    hour: int | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``recommend_once``'s arguments as arrays (arms and hours one per user), or an error."""
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError(
            f"users and items must be equal-length 1-d arrays, got {users.shape}, {items.shape}"
        )
    if len(np.unique(users)) != len(users):
        raise ValueError("users must be distinct within one recommend_once call")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    arms = np.broadcast_to(np.asarray(arm, dtype=str), users.shape)
    hours = np.broadcast_to(np.asarray(hour, np.int64), users.shape)
    if np.any((hours < 0) | (hours > 23)):
        raise ValueError(f"hour must be in 0..23, got values {np.unique(hours)}")
    return users, items, arms, hours


class OneOffRecommendations:
    """``Simulator``'s one-off recommendation methods (see the module docstring)."""

    # Set by Simulator.__init__: this mixin holds no state of its own.
    state: UserState
    corpus: Corpus
    config: SimulatorConfig
    reward_config: RewardConfig
    betas: np.ndarray
    rng: np.random.Generator
    day: int
    followed: list[FollowedRecommendations]
    _one_off_calls: int
    _user_ids: pa.Array
    _track_ids: pa.Array
    user_ids: Callable[[np.ndarray], np.ndarray]

    def recommend_once(
        self,
        users: np.ndarray,
        items: np.ndarray,
        window: int = 60,
        writer: FeedbackLogWriter | None = None,
        arm: str | Sequence[str] = "",
        hour: int | np.ndarray = 12,
    ) -> OneOffRecommendation:
        """Recommend song row ``items[j]`` to user ``users[j]`` once, today, and follow it.

        "Today" is ``self.day``, the day the next ``run``/``run_day`` simulates; call this
        between days. Each user responds (skip level, stream or not) like to any
        recommendation made without a current song; a stream enters the user's library, so
        organic returns can follow, driven by the song's stickiness and the relationship
        state. The returned ``OneOffRecommendation`` holds today's responses (stream,
        its minutes, like, reward) and, in ``.followed``, the books that for ``window``
        days from today (today included) count, per (user, song), the active days and
        minutes with the song from any source. Read them with ``followed_outcomes`` once
        ``self.day >= day + window`` (or earlier for partial outcomes). Users must be
        distinct within one call; churned users respond to nothing and keep zero outcomes.

        With ``writer``, each live user's impression is logged as a one-step decision row:
        the song is the only candidate (chosen with log-probability 0) and stands in for
        the current song (nothing is playing), ``arm`` (one name, or one per user) is its
        arm and policy version, ``hour`` (scalar or per user) its hour of day, and its
        session id is tagged ``-once<n>`` so it never joins a listening session. Logging
        draws no random numbers: a run is the same with or without it.
        """
        users, items, arms, hours = _checked_arguments(users, items, window, arm, hour)
        state, config = self.state, self.config
        weekend = self.day % 7 >= 5
        known_slot = library_slots(state, users, items[:, None])[:, 0]
        relationship = relationship_of(state, users, items[:, None], self.day, self.betas)
        relationship_long = relationship[:, 0, -1]
        no_current = np.full(len(users), -1, np.int64)
        mean_utility = listen_utility_mean(
            state, self.corpus, config, users, no_current, items, relationship_long, weekend
        )
        response = next_response(
            state,
            self.corpus,
            config,
            users,
            no_current,
            items,
            relationship_long,
            weekend,
            self.rng,
        )
        alive = state.alive[users]
        listened = response.listened & alive
        followed = self._book_and_follow(
            users, items, window, known_slot, mean_utility, response, listened, alive
        )
        reward = compute_reward(
            response.listen_fraction, response.liked, response.skip_level, self.reward_config
        )
        result = OneOffRecommendation(
            followed=followed,
            stream_minutes=np.where(listened, response.minutes, 0.0).astype(np.float32),
            listen_fraction=np.where(alive, response.listen_fraction, 0.0).astype(np.float32),
            liked=response.liked & alive,
            reward=np.where(alive, reward, 0.0).astype(np.float32),
        )
        if writer is not None:
            self._log_one_off(writer, result, relationship, arms, hours, alive)
        self._one_off_calls += 1
        return result

    def _book_and_follow(
        self,
        users: np.ndarray,  # (F,)
        items: np.ndarray,  # (F,)
        window: int,
        known_slot: np.ndarray,  # (F,) library slot of the song before today, -1 if unknown
        mean_utility: np.ndarray,  # (F,)
        response: Response,
        listened: np.ndarray,  # (F,) bool, live users only
        alive: np.ndarray,  # (F,) bool
    ) -> FollowedRecommendations:
        """Book today's streams into the libraries and start following the songs."""
        state = self.state
        known = known_slot >= 0
        last_seen = np.where(known, state.library_minutes[users, np.maximum(known_slot, 0)], 0.0)
        record_streams(
            state, self.corpus, users, items, listened, response.minutes, self.day, self.betas
        )
        # Follow the song from now: pinned before today's sessions can fill the library.
        slots_now = library_slots(state, users, items[:, None])[:, 0]
        state.library_pinned[users[slots_now >= 0], slots_now[slots_now >= 0]] = True
        followed = FollowedRecommendations(
            users=users,
            items=items,
            day=self.day,
            window=window,
            known_before=known,
            stream_probability=stream_probability(
                mean_utility, self.config, self.corpus.durations_s[items]
            ).astype(np.float32),
            skip_level=np.where(alive, response.skip_level, -1).astype(np.int8),
            listened=listened,
            active_days=np.zeros(len(users), np.int32),
            active_on_day0=np.zeros(len(users), bool),
            minutes=np.zeros(len(users), np.float32),
            last_seen_minutes=last_seen.astype(np.float32),
        )
        self.followed.append(followed)
        return followed

    def _log_one_off(
        self,
        writer: FeedbackLogWriter,
        result: OneOffRecommendation,
        relationship: np.ndarray,  # (F, 1, R)
        arms: np.ndarray,  # (F,) str
        hours: np.ndarray,  # (F,) int
        alive: np.ndarray,  # (F,) bool
    ) -> None:
        """Write the live users' one-off impressions as one-step decision rows."""
        rows = np.flatnonzero(alive)
        if not len(rows):
            return
        users, items = result.users[rows], result.items[rows]
        arm_names, arm_codes = np.unique(arms[rows], return_inverse=True)
        buffer = DecisionBuffer()
        buffer.add(
            user=users, position=np.zeros(len(rows), np.int32),
            timestamp=EPOCH_START_S + self.day * 86_400 + hours[rows] * 3_600,
            hour=hours[rows], weekday=np.full(len(rows), self.day % 7, np.int8),
            current=items, candidates=items[:, None], relationship=relationship[rows],
            taste=self.state.taste[users], action=np.zeros(len(rows), np.int64), chosen=items,
            logp=np.zeros(len(rows), np.float32), listened=result.listened[rows],
            listen_fraction=result.listen_fraction[rows], liked=result.liked[rows],
            skip_level=result.skip_level[rows], reward=result.reward[rows], arm=arm_codes,
        )  # fmt: skip
        names = pa.array(arm_names.tolist(), pa.string())
        writer.append(
            buffer.to_table(
                self.day,
                self._user_ids,
                self._track_ids,
                names,
                names,
                session_tag=f"-once{self._one_off_calls}",
            )
        )

    def _update_followed(self, day: int) -> None:
        """Book today's streams of followed songs (called before the day's end resets them)."""
        state = self.state
        for followed in self.followed:
            if not followed.is_open(day):
                continue
            slots = library_slots(state, followed.users, followed.items[:, None])[:, 0]
            found = np.flatnonzero(slots >= 0)
            users, slots_found = followed.users[found], slots[found]
            state.library_pinned[users, slots_found] = True  # never forget a followed song
            today = state.library_today[users, slots_found]
            followed.active_days[found] += today
            if day == followed.day:
                followed.active_on_day0[found] = today
            minutes_now = state.library_minutes[users, slots_found]
            followed.minutes[found] += minutes_now - followed.last_seen_minutes[found]
            followed.last_seen_minutes[found] = minutes_now
            if not followed.is_open(day + 1):  # the window closes: release the pins
                state.library_pinned[users, slots_found] = False

    def followed_outcomes(self, followed: FollowedRecommendations) -> pd.DataFrame:
        """Per (user, song) outcomes of a ``recommend_once`` call (see FollowedRecommendations)."""
        frame = followed.to_frame(self.corpus.track_ids)
        frame["user_id"] = self.user_ids(followed.users)
        frame["days_observed"] = min(max(self.day - followed.day, 0), followed.window)
        return frame
