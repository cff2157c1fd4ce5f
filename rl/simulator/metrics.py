"""What the simulator measures: the decision log rows, run summaries, followed items.

RecSim NG's "metrics" entity:
- ``DecisionBuffer`` collects one day's decisions as numpy arrays and turns them into a
  pyarrow table in the log schema with vectorised arrow kernels (no Python per row).
- ``RunSummary`` accumulates users, decisions, skip shares, mean reward, streams.
- ``FollowedRecommendations`` follows one-off recommendations of a given song to given
  users for a window of days (60 by default): first stream (>= 30 s), active days with
  the song and minutes with the song - the paper's A/B metrics.
- ``OneOffRecommendation`` is what ``Simulator.recommend_once`` returns: each user's
  response on the day (stream, its minutes, like, reward) next to those books.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rl.feedback.reward import SKIP_LEVEL_NAMES
from rl.feedback.rows import decision_table
from rl.feedback.schema import ORGANIC_SCHEMA

#: Day 0 of a simulation is Monday 2024-01-01 00:00 UTC.
EPOCH_START_S = 1_704_067_200


def _list_array(flat: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=value_type))


@dataclass
class DecisionBuffer:
    """One day's decisions, appended step by step as arrays (B rows per step)."""

    columns: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **arrays: np.ndarray) -> None:
        for name, values in arrays.items():
            self.columns.setdefault(name, []).append(values)

    def __len__(self) -> int:
        parts = self.columns.get("user", [])
        return int(sum(len(part) for part in parts))

    def concatenated(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) for name, parts in self.columns.items()}

    def to_table(
        self,
        day: int,
        user_ids: pa.Array,  # (U,) string
        track_ids: pa.Array,  # (N,) string
        arm_names: pa.Array,  # (A,) string
        policy_versions: pa.Array,  # (A,) string
        session_tag: str = "",
    ) -> pa.Table:
        """The day's rows in DECISION_SCHEMA, ordered by session then position.

        Rows must have been added in (session, position) order per user (as the simulator
        steps). Session ids are ``<user_id>-d<day>-s<session of the day>``, or, for buffers without
        a ``session`` column, ``<user_id>-d<day>`` + ``session_tag`` (one-off
        recommendations tag theirs, so they never join a listening session)."""
        data = self.concatenated()
        # A user's rows were added in (session, position) order (one lane per user steps
        # through its sessions in turn), so a stable sort by user alone orders the day; the
        # steps' user arrays are each ascending, which timsort merges as runs.
        order = np.argsort(data["user"], kind="stable")
        data = {name: values[order] for name, values in data.items()}
        n = len(data["user"])
        users = pa.array(data["user"])
        user_id = user_ids.take(users)
        candidates = data["candidates"]  # (n, K) rows, -1 padding
        valid = candidates >= 0
        n_candidates = valid.sum(axis=1)
        relationship = data["relationship"]  # (n, K, R)
        arms = pa.array(data["arm"])
        columns = {
            "user_id": user_id,
            "session_id": _session_ids(user_id, day, session_tag, data.get("session")),
            "day": pa.array(np.full(n, day, np.int32)),
            "position": pa.array(data["position"].astype(np.int32)),
            "timestamp": pa.array(data["timestamp"].astype(np.int64)),
            "hour": pa.array(data["hour"].astype(np.int8)),
            "weekday": pa.array(np.full(n, data["weekday"][0] if n else 0, np.int8)),
            "current_track_id": track_ids.take(pa.array(data["current"])),
            "candidate_track_ids": _list_array(candidates[valid], n_candidates, pa.int64()),
            "candidate_relationship": _list_array(
                relationship[valid].reshape(-1), n_candidates * relationship.shape[2], pa.float32()
            ),
            "user_taste": _list_array(
                data["taste"].reshape(-1), np.full(n, data["taste"].shape[1]), pa.float32()
            ),
            "chosen_index": pa.array(data["action"].astype(np.int32)),
            "chosen_track_id": track_ids.take(pa.array(data["chosen"])),
            "behaviour_logp": pa.array(data["logp"].astype(np.float32)),
            "listened": pa.array(data["listened"]),
            "listen_fraction": pa.array(data["listen_fraction"].astype(np.float32)),
            "liked": pa.array(data["liked"]),
            "skip_level": pa.array(data["skip_level"].astype(np.int8)),
            "reward": pa.array(data["reward"].astype(np.float32)),
            "source": pa.array(["simulator"]).take(pa.array(np.zeros(n, np.int64))),
            "policy_version": policy_versions.take(arms),
            "arm": arm_names.take(arms),
            "request_id": pa.nulls(n, pa.string()),
        }
        # Candidate rows -> ids in one take over the flattened list values.
        candidate_rows = columns["candidate_track_ids"]
        columns["candidate_track_ids"] = pa.ListArray.from_arrays(
            candidate_rows.offsets, track_ids.take(candidate_rows.values)
        )
        return decision_table(columns)  # the log's one row builder (rl/feedback/rows.py)


def _session_ids(
    user_id: pa.Array, day: int, session_tag: str, sessions: np.ndarray | None
) -> pa.Array:
    """``<user_id>-d<day>-s<n>`` per row (``<user_id>-d<day><tag>`` without sessions)."""
    if sessions is None:
        return pc.binary_join_element_wise(user_id, pa.scalar(f"d{day:04d}{session_tag}"), "-")
    names = pa.array([f"d{day:04d}-s{n}" for n in range(int(sessions.max()) + 1)], pa.string())
    return pc.binary_join_element_wise(user_id, names.take(pa.array(sessions)), "-")


def organic_table(
    day: int, users: np.ndarray, items: np.ndarray, streams: np.ndarray, minutes: np.ndarray,
    user_ids: pa.Array, track_ids: pa.Array,
) -> pa.Table:  # fmt: skip
    """One day's organic listens in ORGANIC_SCHEMA."""
    return pa.Table.from_arrays(
        [
            user_ids.take(pa.array(users)),
            pa.array(np.full(len(users), day, np.int32)),
            track_ids.take(pa.array(items)),
            pa.array(minutes.astype(np.float32)),
            pa.array(streams.astype(np.int32)),
        ],
        schema=ORGANIC_SCHEMA,
    )


@dataclass
class RunSummary:
    """Totals over the simulated days."""

    users: int = 0
    days: int = 0
    decisions: int = 0
    sessions: int = 0
    skip_counts: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    reward_sum: float = 0.0
    streams_from_recommendations: int = 0
    organic_streams: int = 0
    organic_minutes: float = 0.0
    churned_users: int = 0
    active_user_days: int = 0
    bad_sessions: int = 0

    def add_decisions(
        self, skip_level: np.ndarray, reward: np.ndarray, listened: np.ndarray
    ) -> None:
        self.decisions += len(skip_level)
        self.skip_counts += np.bincount(skip_level.astype(np.int64), minlength=4)
        self.reward_sum += float(reward.sum(dtype=np.float64))
        self.streams_from_recommendations += int(listened.sum())

    @property
    def skip_shares(self) -> dict[str, float]:
        total = max(int(self.skip_counts.sum()), 1)
        return {
            name: float(count) / total
            for name, count in zip(SKIP_LEVEL_NAMES, self.skip_counts, strict=True)
        }

    @property
    def mean_reward(self) -> float:
        return self.reward_sum / max(self.decisions, 1)

    def to_dict(self) -> dict[str, Any]:
        """Every total, with the skip counts and reward sum as shares and a mean."""
        totals = {
            item.name: getattr(self, item.name)
            for item in fields(self)
            if item.name not in ("skip_counts", "reward_sum")
        }
        return {**totals, "skip_shares": self.skip_shares, "mean_reward": self.mean_reward}


@dataclass
class FollowedRecommendations:
    """One-off recommendations of ``items[j]`` to ``users[j]`` on ``day``, followed for
    ``window`` days (the recommendation day included)."""

    users: np.ndarray  # (F,) int64 user rows
    items: np.ndarray  # (F,) int64 song rows
    day: int
    window: int
    known_before: np.ndarray  # (F,) bool the user already knew the song
    stream_probability: np.ndarray  # (F,) true P(stream | recommended) before the draw
    skip_level: np.ndarray  # (F,) int8 response to the recommendation
    listened: np.ndarray  # (F,) bool streamed >= 30 s on the recommendation
    active_days: np.ndarray  # (F,) int32 days with >= 1 stream of the song in the window
    active_on_day0: np.ndarray  # (F,) bool
    minutes: np.ndarray  # (F,) float32 minutes with the song in the window
    last_seen_minutes: np.ndarray  # (F,) float32 library minutes at the last update

    def is_open(self, day: int) -> bool:
        return day < self.day + self.window

    @property
    def first_stream(self) -> np.ndarray:
        """Streamed >= 30 s on the recommendation, and the song was new to the user."""
        return self.listened & ~self.known_before

    def to_frame(self, track_ids: np.ndarray) -> pd.DataFrame:
        """One row per (user, song): the paper's per-recommendation outcomes."""
        return pd.DataFrame(
            {
                "user": self.users,
                "track_id": np.asarray(track_ids)[self.items],
                "day": self.day,
                "known_before": self.known_before,
                "stream_probability": self.stream_probability,
                "skip_level": self.skip_level,
                "first_stream": self.first_stream,
                "listened": self.listened,
                "active_days": self.active_days,
                "return_days": self.active_days - self.active_on_day0,
                "minutes": self.minutes,
            }
        )


def _from_followed(name: str, doc: str) -> Any:
    """A read-only attribute of OneOffRecommendation that is its ``followed`` books' own."""
    return property(lambda self: getattr(self.followed, name), doc=doc)


@dataclass(frozen=True)
class OneOffRecommendation:
    """What ``Simulator.recommend_once`` produced: the users' responses on the day of the
    recommendation (all (F,), in call order) and the books that follow the song.

    Churned users respond to nothing: not listened, skip level -1, no minutes, reward 0.
    """

    followed: FollowedRecommendations
    """The window's books; pass to ``Simulator.followed_outcomes`` once days have run."""
    stream_minutes: np.ndarray  # (F,) float32 minutes of the stream, 0 where not listened
    listen_fraction: np.ndarray  # (F,) float32 share of the song played (0 for churned users)
    liked: np.ndarray  # (F,) bool
    reward: np.ndarray  # (F,) float32 session reward under the simulator's RewardConfig

    # The day's response as the books recorded it: (F,) arrays read through ``followed``.
    users = _from_followed("users", "(F,) int64 user rows.")
    items = _from_followed("items", "(F,) int64 song rows.")
    listened = _from_followed(
        "listened", "(F,) bool streamed >= 30 s; its minutes are booked into the user's library."
    )
    first_stream = _from_followed("first_stream", "(F,) bool listened, and the song was new.")
    skip_level = _from_followed("skip_level", "(F,) int8 0..3, -1 for churned users.")
