"""The simulation loop: users x days x sessions, with a pluggable policy and an optional log.

Where it sits: ``encore simulate`` and the benchmark run it to produce the feedback log
that offline PPO trains on; the A/B harness (rl/experiments/ab_test.py) uses
``recommend_once`` (the day's response, optionally logged) and ``followed_outcomes`` to
measure 60-day outcomes of a single recommendation (both in rl/simulator/one_off.py, which
``Simulator`` inherits); the Gym Env
(rl/simulator/env.py) reuses its pieces for one session at a time.

One simulated day:
1. each live user opens the app with their activity probability (more on weekends), at an
   hour drawn from a daily profile; a session starts at a song of the user's home pool;
2. all sessions step together: candidates = kNN table lookup of the current song, the
   observation (ObservationLayout), the policy's probabilities, a sampled pick and its
   propensity, the user's response, the reward; sessions continue with the user's
   continue probability (less after an immediate skip) up to ``max_session_length``;
3. organic returns to known songs, the outcome books of followed recommendations, then
   the relationship update, taste drift and churn.
Everything random comes from one ``numpy.random.Generator`` seeded once, so a run is
reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from rl.decision.observation import ObservationLayout
from rl.decision.policies import DecisionPolicy
from rl.feedback.reward import EARLY_SKIP, RewardConfig, compute_reward
from rl.simulator.config import SimulatorConfig
from rl.simulator.corpus import Corpus
from rl.simulator.day_end import (
    OrganicListens,
    activity_probability,
    end_of_day,
    organic_returns,
)
from rl.simulator.metrics import (
    EPOCH_START_S,
    DecisionBuffer,
    FollowedRecommendations,
    RunSummary,
    organic_table,
)
from rl.simulator.one_off import OneOffRecommendations
from rl.simulator.recommender import (
    SimulatorCandidatePool,
    SongFeatureSource,
    decide,
    observations_from_corpus,
    retrieve_candidates,
)
from rl.simulator.sessions import SECONDS_PER_DAY, after_track, open_lanes
from rl.simulator.user import (
    UserState,
    initial_state,
    listen_utility_mean,
    next_response,
    record_streams,
    relationship_and_slots,
    relationship_of,
    stream_probability,
)

if TYPE_CHECKING:
    from rl.feedback.log import FeedbackLogWriter

#: Relative session-start weight per hour of day: an evening peak and a morning commute
#: bump, the shape of MSSD's hour_of_day histogram (median hour 15, few sessions at night).
HOUR_PROFILE = np.array(
    [
        0.6,
        0.4,
        0.3,
        0.25,
        0.25,
        0.35,
        0.7,
        1.1,
        1.4,
        1.3,
        1.2,
        1.2,
        1.3,
        1.3,
        1.4,
        1.5,
        1.6,
        1.7,
        1.8,
        1.8,
        1.7,
        1.5,
        1.2,
        0.9,
    ]  # fmt: skip
)
HOUR_PROBABILITIES = HOUR_PROFILE / HOUR_PROFILE.sum()


class Simulator(OneOffRecommendations):
    """A population of simulated listeners served by one or several policies (arms).

    Parameters
    ----------
    corpus : the songs (``build_corpus``).
    n_users : population size.
    policies : one ``DecisionPolicy``, or ``{arm_name: policy}`` for an A/B test.
    layout : observation layout (its ``k`` is the number of candidates).
    user_arms : (n_users,) arm name per user when several policies; default: random.
    config, reward_config : simulator and reward parameters.
    seed : seed of the one random generator.
    policy_versions : version string logged per arm (default: the policy's ``name``).
    song_features : per-candidate song features by corpus row, for a layout with
        ``song_feature_dim > 0`` (rl/longterm/song_table.py); policies built for the layout
        without them read the same observation (the features sit after the mask).
    first_user_id : number of the first user in logged ids (``u<first_user_id + row>``), so
        shards of one population (rl/simulator/shards.py) log disjoint user and session ids.
    """

    def __init__(
        self,
        corpus: Corpus,
        n_users: int,
        policies: DecisionPolicy | Mapping[str, DecisionPolicy],
        layout: ObservationLayout | None = None,
        user_arms: Sequence[str] | None = None,
        config: SimulatorConfig | None = None,
        reward_config: RewardConfig | None = None,
        seed: int = 0,
        policy_versions: Mapping[str, str] | None = None,
        song_features: SongFeatureSource | None = None,
        first_user_id: int = 0,
        candidate_pool: SimulatorCandidatePool | None = None,
    ) -> None:
        self.layout = layout or ObservationLayout(latent_dim=corpus.latent_dim)
        # None = today's pool (the song's kNN); a multi-source pool must fill the layout's k.
        if candidate_pool is not None and candidate_pool.config.k != self.layout.k:
            raise ValueError(
                f"the candidate pool has k={candidate_pool.config.k}, the layout k={self.layout.k}"
            )
        self.candidate_pool = candidate_pool
        song_k = self.layout.k if candidate_pool is None else candidate_pool.config.quota("song")
        if self.layout.song_feature_dim and song_features is None:
            raise ValueError("the layout has song features: pass song_features")
        self.song_features = song_features
        if self.layout.latent_dim != corpus.latent_dim:
            raise ValueError(
                f"layout.latent_dim={self.layout.latent_dim} but the corpus latents are {corpus.latent_dim}-d"
            )
        if corpus.neighbours.shape[1] < min(song_k, len(corpus) - 1):
            raise ValueError(
                f"the corpus neighbour table has {corpus.neighbours.shape[1]} columns, need >= k={song_k}"
            )
        self.corpus = corpus
        self.config = config or SimulatorConfig()
        self.reward_config = reward_config or RewardConfig()
        self.betas = np.asarray(self.layout.betas, np.float32)
        self.rng = np.random.default_rng(seed)
        self.state: UserState = initial_state(
            n_users, corpus, self.config, self.layout.betas, self.rng
        )
        arms = {"": policies} if not isinstance(policies, Mapping) else dict(policies)
        if not arms:
            raise ValueError("at least one policy is needed")
        self.arm_names = list(arms)
        self.policies = {index: arms[name] for index, name in enumerate(self.arm_names)}
        if user_arms is None:
            self.user_arm = self.rng.integers(0, len(arms), n_users)
        else:
            if len(user_arms) != n_users:
                raise ValueError(f"user_arms has {len(user_arms)} entries for {n_users} users")
            lookup = {name: index for index, name in enumerate(self.arm_names)}
            unknown = sorted(set(user_arms) - lookup.keys())
            if unknown:
                raise ValueError(f"user_arms names arms without a policy: {unknown}")
            self.user_arm = np.asarray([lookup[name] for name in user_arms], np.int64)
        versions = policy_versions or {}
        self._arm_names_arrow = pa.array(self.arm_names, pa.string())
        self._policy_versions_arrow = pa.array(
            [versions.get(name, getattr(arms[name], "name", "unknown")) for name in self.arm_names],
            pa.string(),
        )
        if first_user_id < 0:
            raise ValueError(f"first_user_id must be >= 0, got {first_user_id}")
        self._user_ids = pa.array(
            [f"u{first_user_id + user:07d}" for user in range(n_users)], pa.string()
        )
        self._track_ids = pa.array(corpus.track_ids, pa.string())
        self.day = 0
        self.summary = RunSummary(users=n_users)
        self.followed: list[FollowedRecommendations] = []
        self._one_off_calls = 0  # tags the logged sessions of recommend_once calls
        self.last_organic: OrganicListens | None = None

    @property
    def n_users(self) -> int:
        return self.state.n_users

    def user_ids(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self._user_ids.take(pa.array(users)).to_pylist())

    # -- one day -----------------------------------------------------------------------
    def run(
        self,
        days: int,
        writer: FeedbackLogWriter | None = None,
        on_day: Callable[[int, RunSummary], None] | None = None,
    ) -> RunSummary:
        """Simulate ``days`` more days; write each day's rows through ``writer`` if given."""
        for _ in range(days):
            self.run_day(writer)
            if on_day is not None:
                on_day(self.day - 1, self.summary)
        return self.summary

    def run_day(self, writer: FeedbackLogWriter | None = None) -> DecisionBuffer:
        """Simulate day ``self.day`` and advance to the next; returns its decisions."""
        day, state, config, rng = self.day, self.state, self.config, self.rng
        weekday = day % 7  # day 0 is a Monday
        weekend = weekday >= 5
        activity = activity_probability(state, config, weekend)
        active = np.flatnonzero(state.alive & (rng.random(self.n_users) < activity))
        buffer = self._run_sessions(active, day, weekday, weekend)
        organic = organic_returns(state, self.corpus, config, active, day, self.betas, rng)
        self.last_organic = organic  # the day's organic listens, for recorders (targets.py)
        self._update_followed(day)
        churned_before = int((~state.alive).sum())
        end_of_day(state, config, self.betas, day, rng)
        self.summary.churned_users += int((~state.alive).sum()) - churned_before
        self.summary.organic_streams += int(organic.streams.sum())
        self.summary.organic_minutes += float(organic.minutes.sum(dtype=np.float64))
        self.summary.active_user_days += len(active)
        self.summary.days += 1
        if writer is not None:
            if len(buffer):
                writer.append(
                    buffer.to_table(
                        day,
                        self._user_ids,
                        self._track_ids,
                        self._arm_names_arrow,
                        self._policy_versions_arrow,
                    )
                )
            if len(organic.users):
                writer.append_organic(
                    organic_table(
                        day,
                        organic.users,
                        organic.items,
                        organic.streams,
                        organic.minutes,
                        self._user_ids,
                        self._track_ids,
                    )
                )
        self.day += 1
        return buffer

    def _run_sessions(
        self, users: np.ndarray, day: int, weekday: int, weekend: bool
    ) -> DecisionBuffer:
        """Every session of the day: one lane per active user, all lanes stepping together
        (rl/simulator/sessions.py); a lane's sessions run one after the other."""
        state, corpus, config, rng, k = (
            self.state,
            self.corpus,
            self.config,
            self.rng,
            self.layout.k,
        )
        buffer = DecisionBuffer()
        if not len(users):
            return buffer
        day_start = EPOCH_START_S + day * SECONDS_PER_DAY
        lanes = open_lanes(state, config, users, day_start, HOUR_PROBABILITIES, rng)
        self.summary.sessions += len(lanes)
        weekdays = np.full(len(lanes), weekday, np.int8)
        while len(lanes):
            if self.candidate_pool is None:
                candidates = retrieve_candidates(corpus.neighbours, lanes.current, lanes.history, k)
            else:
                candidates = self.candidate_pool.candidates(
                    state, lanes.users, lanes.current, lanes.history, day
                ).rows
            has_candidate = candidates[:, 0] >= 0
            if not has_candidate.all():  # nothing left to recommend: the lane closes
                keep = np.flatnonzero(has_candidate)
                lanes, candidates = lanes.take(keep), candidates[keep]
                if not len(lanes):
                    break
            lane_users = lanes.users
            hour = lanes.hour(day_start)
            relationship, candidate_slots = relationship_and_slots(
                state, lane_users, candidates, day, self.betas
            )
            taste = state.taste[lane_users]
            obs = observations_from_corpus(
                self.layout, corpus, lanes.current, taste, hour, weekday, candidates,
                relationship, self.song_features,
            )  # fmt: skip
            arm = self.user_arm[lane_users]
            decisions = decide(self.policies, arm, obs, rng)
            rows = np.arange(len(lanes))
            chosen = candidates[rows, decisions.actions]
            response = next_response(
                state, corpus, config, lane_users, lanes.current, chosen,
                relationship[rows, decisions.actions, -1], weekend, rng, mood=lanes.mood,
            )  # fmt: skip
            record_streams(
                state, corpus, lane_users, chosen, response.listened, response.minutes, day,
                self.betas, slots=candidate_slots[rows, decisions.actions],
            )  # fmt: skip

            reward = compute_reward(
                response.listen_fraction, response.liked, response.skip_level, self.reward_config
            )
            buffer.add(
                user=lane_users, session=lanes.session_index, position=lanes.position,
                timestamp=lanes.clock, hour=hour, weekday=weekdays[: len(lanes)],
                current=lanes.current, candidates=candidates, relationship=relationship,
                taste=taste, action=decisions.actions, chosen=chosen, logp=decisions.logp,
                listened=response.listened, listen_fraction=response.listen_fraction,
                liked=response.liked, skip_level=response.skip_level, reward=reward, arm=arm,
                utility=response.utility,
            )  # fmt: skip
            self.summary.add_decisions(response.skip_level, reward, response.listened)
            skipped = response.skip_level <= EARLY_SKIP
            state.today_plays[lane_users] += 1
            state.today_satisfaction[lane_users] += (
                np.where(skipped, -1.0, response.listened.astype(np.float32))
                + config.like_satisfaction * response.liked
            )
            step = after_track(
                lanes, chosen, response.skip_level, response.minutes, state, config,
                day_start + SECONDS_PER_DAY, rng,
            )  # fmt: skip
            state.today_satisfaction[lane_users[step.bad_session]] -= config.bad_session_penalty
            self.summary.sessions += int(step.session_ended.sum() - step.lane_done.sum())
            self.summary.bad_sessions += int(step.bad_session.sum())
            if step.lane_done.any():
                lanes = lanes.take(np.flatnonzero(~step.lane_done))
        return buffer

    def listen_probability(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True P(stream | recommended today, no current song) for (user, song) pairs: the
        simulator's ground-truth clickiness, for calibration plots of learned models."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        relationship_long = relationship_of(
            self.state, users, items[:, None], self.day, self.betas
        )[:, 0, -1]
        mean = listen_utility_mean(
            self.state, self.corpus, self.config, users, np.full(len(users), -1), items,
            relationship_long, self.day % 7 >= 5,
        )  # fmt: skip
        return stream_probability(mean, self.config, self.corpus.durations_s[items])

    # -- sparse per-user-per-song outcomes -----------------------------------------------
    def item_outcomes(self) -> pd.DataFrame:
        """Every (user, known song) pair: first-stream day, active days, minutes so far.

        Songs a user forgot (evicted from a full library) are no longer listed; the log's
        decision and organic rows hold the complete history.
        """
        users, slots = np.nonzero(self.state.library_item >= 0)
        items = self.state.library_item[users, slots]
        return pd.DataFrame(
            {
                "user": users,
                "track_id": self.corpus.track_ids[items],
                "first_stream_day": self.state.library_first_day[users, slots],
                "days_active": self.state.library_days_active[users, slots],
                "minutes": self.state.library_minutes[users, slots],
                "stickiness": self.corpus.stickiness[items],
                "clickiness": self.corpus.clickiness[items],
            }
        )
