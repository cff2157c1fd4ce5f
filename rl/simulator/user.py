"""Simulated listeners: state, responses to recommendations, and the daily transition.

RecSim NG's "user" entity, vectorised over users with numpy:

- ``initial_state``: a slow taste vector per user (an anchor song's latent plus noise),
  heterogeneous traits (activity, patience, like and return propensities), a home pool of
  songs near the taste, and an empty library of known songs.
- ``next_response``: the response to one recommended song. An ordinal logit on a listen
  utility (taste and flow distances, the song's clickiness, familiarity, weekend, user
  offset, logistic noise) gives the skip level; the level gives the listen fraction,
  the like and whether it was a stream (>= 30 s, the paper's c > 0).
- ``next_state`` (rl/simulator/day_end.py): the end of a day. Organic returns to known songs (driven by the song's
  stickiness, not its clickiness, and by the user's relationship state), then the
  relationship update s' = beta * s + (1 - beta) * 1{streamed today}, taste drift, churn.

The relationship state is stored lazily: each slot keeps its state as of the end of the
day it was last updated (``library_state_day``); a day without a stream multiplies it by
beta, so the state on any later day is s * beta^(days since), the closed form in
rl/decision/relationship_state.py. Only the slots streamed on a day are touched at its end, which keeps
the day's end proportional to the day's streams instead of users x library slots.

The library (``library_size`` slots per user) is the sparse per-user-per-song store: the
relationship state and the outcomes the 60-day metrics need (first-stream day, active
days, minutes). State arrays are updated in place: copying 100,000 users' libraries every
step would cost more than the simulation itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rl.decision.relationship_state import relationship_after_days
from rl.simulator.config import SimulatorConfig
from rl.simulator.corpus import Corpus
from rl.simulator.kernels import (
    library_slots_kernel,
    record_streams_kernel,
    relationship_and_slots_kernel,
)

if TYPE_CHECKING:  # the day's end lives in day_end.py, which imports this module
    from rl.simulator.day_end import (  # noqa: F401
        OrganicListens,
        activity_probability,
        churn_probability,
        end_of_day,
        next_state,
        organic_returns,
        update_engagement,
    )

_DAY_END = (
    "OrganicListens",
    "activity_probability",
    "churn_probability",
    "end_of_day",
    "next_state",
    "organic_returns",
    "update_engagement",
)
NO_DAY = -1


@dataclass
class UserState:
    """Every user's state, row-aligned (U users, L library slots, R betas, D latent)."""

    taste: np.ndarray  # (U, D) float32 slow taste vector
    activity: np.ndarray  # (U,) float32 base daily probability of opening the app
    engagement: np.ndarray  # (U,) float32 running mean of the active days' satisfaction
    utility_bias: np.ndarray  # (U,) float32 listen-utility offset
    like_bias: np.ndarray  # (U,) float32
    organic_bias: np.ndarray  # (U,) float32
    alive: np.ndarray  # (U,) bool, False once churned
    churn_day: np.ndarray  # (U,) int32 day of churn, NO_DAY while alive
    home_pool: np.ndarray  # (U, H) int32 songs near the taste (session starts)
    library_item: np.ndarray  # (U, L) int32 song row, -1 empty slot
    library_state: np.ndarray  # (U, L, R) float32 relationship state at library_state_day's end
    library_state_day: np.ndarray  # (U, L) int32 day the stored state is as of
    library_first_day: np.ndarray  # (U, L) int32 day of the first stream
    library_days_active: np.ndarray  # (U, L) int32 days with >= 1 stream
    library_minutes: np.ndarray  # (U, L) float32 minutes streamed
    library_today: np.ndarray  # (U, L) bool streamed today
    library_pinned: np.ndarray  # (U, L) bool never forgotten (followed by an experiment)
    today_latent_sum: np.ndarray  # (U, D) float32 sum of latents streamed today
    today_streams: np.ndarray  # (U,) int32
    today_plays: np.ndarray  # (U,) int32 recommended plays + organic streams today
    today_satisfaction: np.ndarray  # (U,) float32 sum of today's satisfaction

    @property
    def n_users(self) -> int:
        return len(self.taste)


@dataclass(frozen=True)
class Response:
    """Responses to B recommended songs."""

    utility: np.ndarray  # (B,) float32 listen utility (noise included)
    skip_level: np.ndarray  # (B,) int8 0..3
    listen_fraction: np.ndarray  # (B,) float32
    liked: np.ndarray  # (B,) bool
    listened: np.ndarray  # (B,) bool streamed >= min_stream_seconds
    minutes: np.ndarray  # (B,) float32


def initial_state(
    n_users: int,
    corpus: Corpus,
    config: SimulatorConfig,
    betas: tuple[float, ...],
    rng: np.random.Generator,
) -> UserState:
    """Draw ``n_users`` fresh users (all alive, nothing known yet)."""
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    dim, slots, n_betas = corpus.latent_dim, config.library_size, len(betas)
    anchors = rng.integers(0, len(corpus), n_users)
    noise = rng.standard_normal((n_users, dim)) * (
        config.taste_noise * corpus.latent_scale / np.sqrt(dim)
    )
    taste = (corpus.latents[anchors] + noise).astype(np.float32)
    # The anchor and its nearest neighbours: the songs nearest the taste (taste = anchor +
    # noise) without a kNN query per user.
    pool_size = min(config.home_pool_size, corpus.neighbours.shape[1] + 1)
    home_pool = np.concatenate(
        [anchors[:, None], corpus.neighbours[anchors, : pool_size - 1]], axis=1
    )
    home_pool = np.where(home_pool >= 0, home_pool, anchors[:, None])
    return UserState(
        taste=taste,
        activity=rng.beta(config.activity_alpha, config.activity_beta, n_users).astype(np.float32),
        engagement=np.zeros(n_users, np.float32),
        utility_bias=(config.user_bias_std * rng.standard_normal(n_users)).astype(np.float32),
        like_bias=(config.like_bias_std * rng.standard_normal(n_users)).astype(np.float32),
        organic_bias=(config.organic_bias_std * rng.standard_normal(n_users)).astype(np.float32),
        alive=np.ones(n_users, bool),
        churn_day=np.full(n_users, NO_DAY, np.int32),
        home_pool=home_pool.astype(np.int32),
        library_item=np.full((n_users, slots), -1, np.int32),
        library_state=np.zeros((n_users, slots, n_betas), np.float32),
        library_state_day=np.zeros((n_users, slots), np.int32),
        library_first_day=np.full((n_users, slots), NO_DAY, np.int32),
        library_days_active=np.zeros((n_users, slots), np.int32),
        library_minutes=np.zeros((n_users, slots), np.float32),
        library_today=np.zeros((n_users, slots), bool),
        library_pinned=np.zeros((n_users, slots), bool),
        today_latent_sum=np.zeros((n_users, dim), np.float32),
        today_streams=np.zeros(n_users, np.int32),
        today_plays=np.zeros(n_users, np.int32),
        today_satisfaction=np.zeros(n_users, np.float32),
    )


def library_slots(state: UserState, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(B,) users x (B, K) song rows -> (B, K) library slot of each song, -1 if unknown
    (the first slot holding it; a compiled loop, rl/simulator/kernels.py)."""
    return library_slots_kernel(
        state.library_item, np.asarray(users, np.int64), np.asarray(items, np.int64)
    )


def relationship_now(
    state: UserState, users: np.ndarray, slots: np.ndarray, day: int, betas: np.ndarray
) -> np.ndarray:
    """Relationship state of library slots during ``day`` (as of the end of day - 1).

    ``users`` and ``slots`` broadcast together (e.g. (B, 1) and (B, K)); returns (..., R).
    """
    idle_days = (day - 1) - state.library_state_day[users, slots]
    return state.library_state[users, slots] * _decay_table(betas, day + 1)[idle_days]


_DECAY_TABLES: dict[tuple[float, ...], np.ndarray] = {}


def _decay_table(betas: np.ndarray, n_days: int) -> np.ndarray:
    """(>= n_days, R) float32 table of beta^n (``relationship_after_days`` of a unit state),
    cached per betas: a lookup is far cheaper than a power per slot and step."""
    key = tuple(float(b) for b in np.asarray(betas).ravel())
    table = _DECAY_TABLES.get(key)
    if table is None or len(table) < n_days:
        size = max(n_days, 2 * (0 if table is None else len(table)), 128)
        table = relationship_after_days(
            np.ones(len(key), np.float32), np.arange(size), np.asarray(key, np.float32)
        )
        _DECAY_TABLES[key] = table
    return table


def relationship_of(
    state: UserState, users: np.ndarray, items: np.ndarray, day: int, betas: np.ndarray
) -> np.ndarray:
    """(B,) users x (B, K) song rows -> (B, K, R) relationship states during ``day``
    (0 when the song is unknown)."""
    return relationship_and_slots(state, users, items, day, betas)[0]


def relationship_and_slots(
    state: UserState, users: np.ndarray, items: np.ndarray, day: int, betas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``relationship_of`` and the (B, K) library slots it looked up (-1 unknown), which
    ``record_streams`` can reuse for the picked song instead of searching again: the
    ``relationship_now`` of each known slot, in one compiled pass (rl/simulator/kernels.py)."""
    return relationship_and_slots_kernel(
        state.library_item,
        state.library_state,
        state.library_state_day,
        _decay_table(betas, day + 1),
        np.asarray(users, np.int64),
        np.asarray(items, np.int64),
        day,
    )


def listen_utility_mean(
    state: UserState,
    corpus: Corpus,
    config: SimulatorConfig,
    users: np.ndarray,  # (B,)
    current: np.ndarray,  # (B,) song rows, -1 for none (a cold recommendation)
    items: np.ndarray,  # (B,)
    relationship_long: np.ndarray,  # (B,) long-memory relationship state with the item
    weekend: np.ndarray | bool,
) -> np.ndarray:
    """Noise-free listen utility of recommending ``items`` (B,)."""
    scale2 = corpus.latent_scale**2
    item_latents = corpus.latents[items]
    taste_d2 = ((state.taste[users] - item_latents) ** 2).sum(axis=1) / scale2
    flow_d2 = np.where(
        current >= 0,
        ((corpus.latents[np.maximum(current, 0)] - item_latents) ** 2).sum(axis=1) / scale2,
        0.0,
    )
    return (
        state.utility_bias[users]
        + corpus.clickiness[items]
        - config.taste_weight * taste_d2
        - config.flow_weight * flow_d2
        + config.familiarity_weight * relationship_long
        + config.weekend_utility * np.asarray(weekend, np.float32)
    ).astype(np.float32)


def stream_probability(
    mean_utility: np.ndarray, config: SimulatorConfig, durations_s: np.ndarray | None = None
) -> np.ndarray:
    """P(the recommendation becomes a stream of >= min_stream_seconds), no mood.

    Without ``durations_s``: P(at least a late skip) = P(utility > second threshold), exact
    for songs shorter than min_stream_seconds / listen_fraction_edges[1]. With the songs'
    durations, skips that still last min_stream_seconds count too (the listen fraction is
    uniform within each skip level's bin), so the probability is exact for any length."""
    thresholds = np.asarray(config.skip_thresholds, np.float64)
    above = 1.0 / (1.0 + np.exp(-(np.asarray(mean_utility, np.float64)[..., None] - thresholds)))
    late_or_more = above[..., 1]
    if durations_s is None:
        return late_or_more
    needed = config.min_stream_seconds / np.maximum(np.asarray(durations_s, np.float64), 1e-9)
    lower = np.array([0.0, config.listen_fraction_edges[0]])
    upper = np.array([config.listen_fraction_edges[0], config.listen_fraction_edges[1]])
    share = np.clip((upper - needed[..., None]) / (upper - lower), 0.0, 1.0)  # (..., 2)
    level_probability = np.stack([1.0 - above[..., 0], above[..., 0] - above[..., 1]], axis=-1)
    return late_or_more + (level_probability * share).sum(axis=-1)


def next_response(
    state: UserState,
    corpus: Corpus,
    config: SimulatorConfig,
    users: np.ndarray,
    current: np.ndarray,
    items: np.ndarray,
    relationship_long: np.ndarray,
    weekend: np.ndarray | bool,
    rng: np.random.Generator,
    mood: np.ndarray | None = None,  # (B,) the session's mood (utility offset), None = 0
) -> Response:
    """Draw the responses of ``users`` to the recommended ``items`` (all (B,))."""
    batch = len(users)
    mean = listen_utility_mean(
        state, corpus, config, users, current, items, relationship_long, weekend
    )
    if mood is not None:
        mean = mean + mood
    uniform = rng.random((3, batch))
    utility = mean + np.log(uniform[0]) - np.log1p(-uniform[0])  # logistic noise
    skip_level = np.searchsorted(np.asarray(config.skip_thresholds), utility).astype(np.int8)
    lower = np.asarray((0.0, *config.listen_fraction_edges[:2], 1.0), np.float32)[skip_level]
    upper = np.asarray((*config.listen_fraction_edges, 1.0), np.float32)[skip_level]
    listen_fraction = (lower + (upper - lower) * uniform[1]).astype(np.float32)
    seconds = listen_fraction * corpus.durations_s[items]
    like_logit = (
        config.like_intercept + state.like_bias[users] + 0.5 * (utility - config.skip_thresholds[2])
    )
    liked = (skip_level == 3) & (uniform[2] < 1.0 / (1.0 + np.exp(-like_logit)))
    return Response(
        utility=utility.astype(np.float32),
        skip_level=skip_level,
        listen_fraction=listen_fraction,
        liked=liked,
        listened=seconds >= config.min_stream_seconds,
        minutes=(seconds / 60.0).astype(np.float32),
    )


def record_streams(
    state: UserState,
    corpus: Corpus,
    users: np.ndarray,  # (B,) distinct users
    items: np.ndarray,  # (B,)
    streamed: np.ndarray,  # (B,) bool
    minutes: np.ndarray,  # (B,)
    day: int,
    betas: np.ndarray,
    slots: np.ndarray | None = None,  # (B,) library slots of the items if known (-1 new)
) -> None:
    """Book streams into the users' libraries (new songs take a free or forgotten slot).

    A new song takes the first free slot; a full library forgets the song with the weakest
    long memory: never a pinned one, and a song streamed today only when every slot was
    (its day is not booked yet; with several sessions a day a heavy listener fills many
    slots a day). ``users`` must be distinct within one call (one decision per session per
    step). One compiled pass over the streams (rl/simulator/kernels.py).
    """
    record_streams_kernel(
        state.library_item,
        state.library_state,
        state.library_state_day,
        state.library_first_day,
        state.library_days_active,
        state.library_minutes,
        state.library_today,
        state.library_pinned,
        state.today_latent_sum,
        state.today_streams,
        corpus.latents,
        _decay_table(betas, day + 1)[:, -1].copy(),
        np.asarray(users, np.int64),
        np.asarray(items, np.int64),
        np.asarray(streamed, bool),
        np.asarray(minutes, np.float32),
        np.zeros(0, np.int64) if slots is None else np.asarray(slots, np.int64),
        day,
    )


def __getattr__(name: str) -> Any:
    """The day's end (``next_state`` and its stages) stays importable from here; loaded on
    first use because rl/simulator/day_end.py imports this module."""
    if name in _DAY_END:
        from rl.simulator import day_end

        return getattr(day_end, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
