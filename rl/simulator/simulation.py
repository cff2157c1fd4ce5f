"""The simulation loop: users x days x sessions, with a pluggable policy and an optional log.

Where it sits: ``encore simulate`` and the benchmark run it to produce the feedback log
that offline PPO trains on; the A/B harness (rl/longterm/) uses ``recommend_once`` (the
day's response, optionally logged) and ``followed_outcomes`` to measure 60-day outcomes of
a single recommendation; the Gym Env
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
from rl.simulator.metrics import (
    EPOCH_START_S,
    DecisionBuffer,
    FollowedRecommendations,
    OneOffRecommendation,
    RunSummary,
    organic_table,
)
from rl.simulator.recommender import (
    SimulatorCandidatePool,
    SongFeatureSource,
    decide,
    observations_from_corpus,
    retrieve_candidates,
)
from rl.simulator.sessions import SECONDS_PER_DAY, after_track, open_lanes
from rl.simulator.user import (
    OrganicListens,
    UserState,
    activity_probability,
    end_of_day,
    initial_state,
    library_slots,
    listen_utility_mean,
    next_response,
    organic_returns,
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


class Simulator:
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

    # -- one-off recommendations (the A/B hook) ------------------------------------------
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
        state, config = self.state, self.config
        weekend = self.day % 7 >= 5
        known_slot = library_slots(state, users, items[:, None])[:, 0]
        known = known_slot >= 0
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
                mean_utility, config, self.corpus.durations_s[items]
            ).astype(np.float32),
            skip_level=np.where(alive, response.skip_level, -1).astype(np.int8),
            listened=listened,
            active_days=np.zeros(len(users), np.int32),
            active_on_day0=np.zeros(len(users), bool),
            minutes=np.zeros(len(users), np.float32),
            last_seen_minutes=last_seen.astype(np.float32),
        )
        self.followed.append(followed)
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
