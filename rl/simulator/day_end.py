"""A simulated listener's day end: organic returns, the relationship update, engagement, churn.

Where it sits: the daily-transition half of rl/simulator/user.py (which holds the state,
the library lookups and the response to one recommendation, and re-exports these names).
``next_state`` is the whole transition: ``organic_returns`` (returns to known songs, driven
by the song's stickiness and the user's relationship state), then ``end_of_day`` (the
relationship update s' = beta * s + (1 - beta) * 1{streamed today} of the slots streamed
today, taste drift, engagement, churn). ``activity_probability`` is the next morning's
chance of opening the app. State arrays are updated in place (see user.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rl.decision.relationship_state import update_relationship_state
from rl.simulator.config import SimulatorConfig
from rl.simulator.corpus import Corpus
from rl.simulator.kernels import organic_logits_kernel
from rl.simulator.user import UserState, _decay_table, relationship_now


@dataclass(frozen=True)
class OrganicListens:
    """One day's organic returns: (user, song) pairs with streams and minutes."""

    users: np.ndarray  # (E,) int64
    items: np.ndarray  # (E,) int32
    streams: np.ndarray  # (E,) int32
    minutes: np.ndarray  # (E,) float32


def organic_returns(
    state: UserState,
    corpus: Corpus,
    config: SimulatorConfig,
    users: np.ndarray,  # (A,) users active today
    day: int,
    betas: np.ndarray,
    rng: np.random.Generator,
) -> OrganicListens:
    """Draw organic returns of active users to songs they know (stickiness-driven)."""
    # Only known songs can be returned to: the flat (user, slot) pairs, in one compiled pass.
    user_rows, slots, song_rows, logit = organic_logits_kernel(
        state.library_item,
        state.library_state,
        state.library_state_day,
        _decay_table(betas, day + 1),
        state.taste,
        state.organic_bias,
        corpus.latents,
        corpus.stickiness,
        np.asarray(config.habit_weights, np.float32),
        np.asarray(users, np.int64),
        day,
        1.0 / corpus.latent_scale**2,
        config.organic_taste_weight,
    )
    returned = rng.random(len(user_rows)) < 1.0 / (1.0 + np.exp(-logit))
    user_rows, slots, song_rows = user_rows[returned], slots[returned], song_rows[returned]
    streams = 1 + rng.poisson(config.organic_streams_mean, len(user_rows))
    minutes = streams * corpus.durations_s[song_rows] / 60.0 * rng.uniform(0.7, 1.0, len(user_rows))
    state.library_today[user_rows, slots] = True
    state.library_minutes[user_rows, slots] += minutes.astype(np.float32)
    # Coming back to a song on one's own is satisfying listening (see end_of_day).
    np.add.at(state.today_plays, user_rows, streams.astype(np.int32))
    np.add.at(state.today_satisfaction, user_rows, config.organic_satisfaction * streams)
    return OrganicListens(
        user_rows, song_rows.astype(np.int32), streams.astype(np.int32), minutes.astype(np.float32)
    )


def end_of_day(
    state: UserState,
    config: SimulatorConfig,
    betas: np.ndarray,
    day: int,
    rng: np.random.Generator,
    users: np.ndarray | None = None,  # restrict to these users (the Env); None = everyone
) -> None:
    """Close ``day``: book active days, relationship update, taste drift, engagement, churn.

    Only the slots streamed today change: s = beta * s_yesterday + (1 - beta), stored as of
    today (``update_relationship_state``); every other slot decays lazily (see module doc).
    Users who played anything today fold the day's mean satisfaction into their
    engagement (``update_engagement``); churn is more likely at low engagement.
    """
    if users is None:
        stream_users, stream_slots = np.nonzero(state.library_today)
        rows = np.flatnonzero(state.alive)
    else:
        rows = users[state.alive[users]]
        row_index, stream_slots = np.nonzero(state.library_today[users])
        stream_users = users[row_index]
    yesterday = relationship_now(state, stream_users, stream_slots, day, betas)
    state.library_state[stream_users, stream_slots] = update_relationship_state(
        yesterday, np.ones(len(stream_users), bool), betas
    )
    state.library_state_day[stream_users, stream_slots] = day
    state.library_days_active[stream_users, stream_slots] += 1
    state.library_today[stream_users, stream_slots] = False
    streamed = rows[state.today_streams[rows] > 0]
    if len(streamed) and config.taste_drift > 0:
        mean_latent = state.today_latent_sum[streamed] / state.today_streams[streamed][:, None]
        state.taste[streamed] += config.taste_drift * (mean_latent - state.taste[streamed])
    state.today_latent_sum[streamed] = 0.0
    state.today_streams[streamed] = 0
    played = rows[state.today_plays[rows] > 0]
    state.engagement[played] = update_engagement(
        state.engagement[played],
        state.today_satisfaction[played] / state.today_plays[played],
        config.engagement_rate,
    )
    state.today_plays[played] = 0
    state.today_satisfaction[played] = 0.0
    churned = rows[rng.random(len(rows)) < churn_probability(state.engagement[rows], config)]
    state.alive[churned] = False
    state.churn_day[churned] = day


def update_engagement(
    engagement: np.ndarray, day_satisfaction: np.ndarray, rate: float
) -> np.ndarray:
    """Running mean of the active days' satisfaction: g' = (1 - rate) * g + rate * q.

    q, a day's mean satisfaction per play, is +1 for a stream, -1 for a skip at or below
    skip_2, + like_satisfaction for a like, + organic_satisfaction per organic stream, minus
    bad_session_penalty per bad session: about 0 at MSSD's real skip rate (49% skip_2), so
    engagement is centred where the real data sits."""
    return ((1.0 - rate) * engagement + rate * day_satisfaction).astype(np.float32)


def activity_probability(
    state: UserState, config: SimulatorConfig, weekend: bool, users: np.ndarray | None = None
) -> np.ndarray:
    """Today's probability of opening the app: the base probability's log-odds plus
    engagement_weight x engagement, times weekend_activity on weekends (capped at 1)."""
    base = state.activity if users is None else state.activity[users]
    engagement = state.engagement if users is None else state.engagement[users]
    base = np.clip(base, 1e-6, 1 - 1e-6)
    logit = np.log(base) - np.log1p(-base) + config.engagement_weight * engagement
    probability = 1.0 / (1.0 + np.exp(-logit))
    if weekend:
        probability = np.minimum(probability * config.weekend_activity, 1.0)
    return probability.astype(np.float32)


def churn_probability(engagement: np.ndarray, config: SimulatorConfig) -> np.ndarray:
    """Daily probability of leaving for good: churn_rate x exp(-weight x engagement)."""
    return np.minimum(config.churn_rate * np.exp(-config.churn_engagement_weight * engagement), 1.0)


def next_state(
    state: UserState,
    corpus: Corpus,
    config: SimulatorConfig,
    betas: np.ndarray,
    active_users: np.ndarray,  # (A,) users who opened the app today
    day: int,
    rng: np.random.Generator,
    users: np.ndarray | None = None,
) -> OrganicListens:
    """The whole daily transition: ``organic_returns`` then ``end_of_day``."""
    organic = organic_returns(state, corpus, config, active_users, day, betas, rng)
    end_of_day(state, config, betas, day, rng, users)
    return organic
