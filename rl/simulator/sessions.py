"""Listening sessions within a day: lanes of sessions, the mood, and when a session ends.

Part of RecSim NG's "user" entity, split out of user.py because it is the within-day
dynamics. One lane per active user: the user's sessions of the day run one after the
other in that lane (so every step touches each user at most once, which the library
bookkeeping needs), and all lanes step together in ``Simulator._run_sessions``.

- A day's sessions: 1 + Poisson(sessions_per_activity x base activity) (daily listeners
  open several), the first at an hour drawn from the daily profile, each next one 30
  minutes + an exponential gap (mean ``session_gap_minutes``) after the previous ended, so
  cutting the log at 30-minute gaps gives back the sessions. Sessions that would start
  after midnight are dropped.
- Mood: a listen-utility offset that starts each session ~ N(0, mood_start_std), keeps
  ``mood_persistence`` of itself from track to track and gains ``mood_feedback`` after a
  track played beyond skip_2 or loses it after a skip at or below skip_2. So skips come in
  runs, and a good pick repairs the mood of a session that was going badly.
- End of a session: each session is planned to last 1 + Poisson(Gamma(shape, mean))
  plays (a commute, an album: real sessions are less spread than a constant stop
  probability gives, median 8 for a mean of 9.8), capped at ``max_session_length``; after
  each track the listener may also quit early, P = sigmoid(quit_logit +
  skip_run_end_weight x current run of skips), so sessions end after runs of skips.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from rl.feedback.reward import EARLY_SKIP
from rl.simulator.config import SimulatorConfig
from rl.simulator.user import UserState

#: Sessions are separated by at least this many seconds (log-stats' sessionisation gap).
SESSION_GAP_S = 30 * 60
#: Day 0 of a simulation is Monday 2024-01-01 00:00 UTC (rl/simulator/metrics.py).
SECONDS_PER_DAY = 86_400


@dataclass
class Lanes:
    """The live sessions, one per lane (B lanes, B distinct users)."""

    users: np.ndarray  # (B,) int64 user rows
    sessions_left: np.ndarray  # (B,) int32 sessions still to come today after this one
    session_index: np.ndarray  # (B,) int32 0-based session of the day
    position: np.ndarray  # (B,) int32 0-based step in the session
    clock: np.ndarray  # (B,) int64 seconds since the Unix epoch
    current: np.ndarray  # (B,) int64 song playing
    history: np.ndarray  # (B, H) int64 songs of the session, most recent first, -1 padding
    mood: np.ndarray  # (B,) float32 listen-utility offset
    skip_run: np.ndarray  # (B,) int32 skips in a row up to the current song
    planned: np.ndarray  # (B,) int32 plays the session is planned to last

    def __len__(self) -> int:
        return len(self.users)

    def take(self, rows: np.ndarray) -> Lanes:
        return Lanes(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def hour(self, day_start_s: int) -> np.ndarray:
        """(B,) int64 hour of day of each lane's clock (a late session may pass midnight)."""
        return ((self.clock - day_start_s) // 3_600) % 24


def sessions_today(
    state: UserState, config: SimulatorConfig, users: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(A,) int32 sessions each active user opens today (>= 1)."""
    extra = rng.poisson(config.sessions_per_activity * state.activity[users])
    return (1 + extra).astype(np.int32)


def open_lanes(
    state: UserState,
    config: SimulatorConfig,
    users: np.ndarray,  # (A,) active users
    day_start_s: int,
    hour_probabilities: np.ndarray,  # (24,)
    rng: np.random.Generator,
) -> Lanes:
    """The first session of each active user's day."""
    n = len(users)
    hour = rng.choice(24, size=n, p=hour_probabilities)
    lanes = Lanes(
        users=users.astype(np.int64),
        sessions_left=sessions_today(state, config, users, rng) - 1,
        session_index=np.zeros(n, np.int32),
        position=np.zeros(n, np.int32),
        clock=day_start_s + hour * 3_600 + rng.integers(0, 3_600, n),
        current=np.zeros(n, np.int64),
        history=np.full((n, config.history_length), -1, np.int64),
        mood=np.zeros(n, np.float32),
        skip_run=np.zeros(n, np.int32),
        planned=np.zeros(n, np.int32),
    )
    _start_session(lanes, np.arange(n), state, config, rng)
    return lanes


def _start_session(
    lanes: Lanes,
    rows: np.ndarray,
    state: UserState,
    config: SimulatorConfig,
    rng: np.random.Generator,
) -> None:
    """(Re)open a session in ``rows``: a start song of the home pool, a fresh mood."""
    users = lanes.users[rows]
    start = state.home_pool[users, rng.integers(0, state.home_pool.shape[1], len(rows))]
    lanes.current[rows] = start
    lanes.history[rows] = -1
    lanes.history[rows, 0] = start
    lanes.position[rows] = 0
    lanes.skip_run[rows] = 0
    lanes.mood[rows] = config.mood_start_std * rng.standard_normal(len(rows))
    lanes.planned[rows] = planned_lengths(config, len(rows), rng)


def planned_lengths(config: SimulatorConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) int32 planned plays: 1 + Poisson(Gamma(shape, (mean - 1) / shape)), capped."""
    shape = config.session_length_shape
    rate = rng.gamma(shape, (config.session_length_mean - 1.0) / shape, n)
    return np.minimum(1 + rng.poisson(rate), config.max_session_length).astype(np.int32)


def next_mood(mood: np.ndarray, skipped: np.ndarray, config: SimulatorConfig) -> np.ndarray:
    """m' = persistence x m + feedback x (+1 after a play, -1 after a skip)."""
    signal = np.where(skipped, -1.0, 1.0)
    return (config.mood_persistence * mood + config.mood_feedback * signal).astype(np.float32)


def quit_probability(skip_run: np.ndarray, config: SimulatorConfig) -> np.ndarray:
    """P(quitting before the planned end after this track) given the run of skips."""
    return 1.0 / (1.0 + np.exp(-(config.quit_logit + config.skip_run_end_weight * skip_run)))


@dataclass(frozen=True)
class StepEnd:
    """What happened to the lanes after a track (all (B,) bool)."""

    session_ended: np.ndarray
    bad_session: np.ndarray  # ended right after a run of >= bad_session_skips skips
    lane_done: np.ndarray  # no session left today (the lane closes)


def after_track(
    lanes: Lanes,
    chosen: np.ndarray,  # (B,) song played
    skip_level: np.ndarray,  # (B,) int8
    minutes: np.ndarray,  # (B,) minutes played
    state: UserState,
    config: SimulatorConfig,
    day_end_s: int,
    rng: np.random.Generator,
) -> StepEnd:
    """Advance every lane past the track just played (in place): the mood, the skip run,
    the clock; end sessions, and open the next session of the day where one is left."""
    skipped = skip_level <= EARLY_SKIP  # MSSD's skip_2: played briefly or less
    lanes.mood = next_mood(lanes.mood, skipped, config)
    lanes.skip_run = np.where(skipped, lanes.skip_run + 1, 0).astype(np.int32)
    lanes.clock = lanes.clock + np.round(minutes * 60.0).astype(np.int64) + 1  # a new array
    lanes.position = lanes.position + 1
    lanes.history = np.concatenate([chosen[:, None], lanes.history[:, :-1]], axis=1)
    lanes.current = chosen.astype(np.int64)
    quits = rng.random(len(lanes)) < quit_probability(lanes.skip_run, config)
    ended = quits | (lanes.position >= lanes.planned)
    bad = ended & (lanes.skip_run >= config.bad_session_skips)
    gap = SESSION_GAP_S + rng.exponential(config.session_gap_minutes * 60.0, len(lanes))
    next_start = lanes.clock + gap.astype(np.int64)
    reopen = np.flatnonzero(ended & (lanes.sessions_left > 0) & (next_start < day_end_s))
    if len(reopen):
        # New arrays, not in-place writes: the decision buffer holds the previous ones.
        lanes.clock[reopen] = next_start[reopen]  # (a new array since the += above)
        lanes.sessions_left = lanes.sessions_left.copy()
        lanes.sessions_left[reopen] -= 1
        lanes.session_index = lanes.session_index.copy()
        lanes.session_index[reopen] += 1
        _start_session(lanes, reopen, state, config, rng)
    done = ended.copy()
    done[reopen] = False
    return StepEnd(session_ended=ended, bad_session=bad, lane_done=done)
