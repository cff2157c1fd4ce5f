"""The long-term reward of a logged decision: what the recommendation did over the next weeks.

Where it sits: between the feedback log and offline PPO (``encore offline-steps --reward
return-days``, ``encore ab-test --train-ppo return-days``). The session reward (``rl.feedback.reward``) only
sees the listen that follows a pick; the paper values a recommendation by the days
the user comes back to the item. For every logged decision

    r = r_immediate + λ · credit · R,
    R = #{days t in d+1 .. d+W : the user listened to the chosen item on day t}

with d the decision day, W the return window (``return_window_days``, 59 = the paper's
"next 59 days"), λ ``return_weight``, r_immediate the session reward, and credit = 1 when the
pick was streamed (``credit="listened"``) or streamed *and new to the user* (``"discovery"``,
the paper's discovery setting: only there is the habit plausibly caused by this decision).
``return_source="organic"`` counts only days with an organic (unrecommended) listen, so a
later recommendation of the same song earns its own credit instead of this one's; ``"any"``
counts every listen day. Several decisions on the same (user, item) may credit the same
future day: R is what followed the decision, not a counterfactual uplift.

Right censoring: a decision on day d sees its full window only when d + W < end of the log.
``censored="drop"`` (default) drops later decisions (whole days, so whole simulator
sessions); ``"scale"`` keeps them with R scaled by W / (days observed), an unbiased-in-
expectation extrapolation only when return days are spread evenly over the window.

The core (``ReturnDayIndex``, ``long_term_term``) is numpy; ``write_long_term_offline_steps``
is the Ray Data shell: listen days from the log (``log_prep``), a ``map_batches`` adding
the ``long_term_reward`` column to the decision rows, then the ordinary session-to-steps
conversion (``rl.feedback.offline_steps``), which adds that column to the immediate reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rl.decision.observation import ObservationLayout
from rl.feedback.offline_steps import EXTRA_REWARD_COLUMN as LONG_TERM_COLUMN
from rl.feedback.reward import RewardConfig
from rl.longterm.relationship_history import ListenDays

RETURN_SOURCES = ("organic", "any")
CREDIT_RULES = ("listened", "discovery")
CENSORING = ("drop", "scale")
#: File beside the steps describing the reward they carry (skipped by parquet readers).
REWARD_FILE = "_reward.json"


@dataclass(frozen=True)
class LongTermRewardConfig:
    """The long-term reward r = r_immediate + λ · credit · (return days in the next W days)."""

    return_window_days: int = 59
    """W: days after the decision day whose listens count (the paper's 59). >= 1."""
    return_weight: float = 1.0
    """λ: reward per return day, in the immediate reward's units (a played-through song is
    ~1, a like adds ``immediate.like_weight``). >= 0; 0 gives back the session reward."""
    return_source: str = "organic"
    """"organic": only days with an organic listen count; "any": any listen day."""
    credit: str = "listened"
    """"listened": decisions whose pick was streamed earn the return days; "discovery": only
    those whose pick was also new to the user (logged relationship state all zero)."""
    censored: str = "drop"
    """Decisions whose window runs past the log's end: "drop" them, or "scale" R by W/observed."""
    immediate: RewardConfig = field(default_factory=RewardConfig)
    """The session reward recomputed from the logged response."""

    def __post_init__(self) -> None:
        if self.return_window_days < 1:
            raise ValueError(f"return_window_days must be >= 1, got {self.return_window_days}")
        if not np.isfinite(self.return_weight) or self.return_weight < 0:
            raise ValueError(f"return_weight must be finite and >= 0, got {self.return_weight}")
        for name, allowed in (
            ("return_source", RETURN_SOURCES),
            ("credit", CREDIT_RULES),
            ("censored", CENSORING),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        return state | {"immediate": self.immediate.to_dict()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LongTermRewardConfig:
        return cls(
            **{k: v for k, v in state.items() if k != "immediate"},
            immediate=RewardConfig.from_dict(state["immediate"]),
        )


class ReturnDayIndex:
    """Counts, for (user, item, day) queries, the listen days in day+1 .. day+W.

    Built once from ``ListenDays`` (sorted by user, item, day); a query is two binary
    searches on one int64 key per listen day, so millions of decisions take seconds.
    """

    def __init__(self, listen_days: ListenDays, source: str = "organic") -> None:
        if source not in RETURN_SOURCES:
            raise ValueError(f"source must be one of {RETURN_SOURCES}, got {source!r}")
        keep = listen_days.organic if source == "organic" else np.ones(len(listen_days), bool)
        self.user_index = pd.Index(np.asarray(listen_days.user_ids).astype(str))
        self.item_index = pd.Index(np.asarray(listen_days.track_ids).astype(str))
        self.n_items = max(len(self.item_index), 1)
        #: Days per pair in the key: wide enough for any query day + window.
        self.day_span = np.int64(2**20)
        pair = listen_days.user[keep] * np.int64(self.n_items) + listen_days.item[keep]
        self.keys = np.sort(pair * self.day_span + listen_days.day[keep].astype(np.int64))
        self.end_day = listen_days.end_day

    def count(
        self,
        user_ids: np.ndarray,  # (B,) str
        track_ids: np.ndarray,  # (B,) str
        days: np.ndarray,  # (B,) int
        window_days: int,
    ) -> np.ndarray:
        """(B,) int32 number of listen days in [day + 1, day + window_days]; 0 for unknowns."""
        days = np.asarray(days, np.int64)
        if np.any(days < 0) or np.any(days + window_days >= self.day_span):
            raise ValueError(f"days must be in [0, {self.day_span - window_days}), got {days}")
        users = self.user_index.get_indexer(np.asarray(user_ids).astype(str))
        items = self.item_index.get_indexer(np.asarray(track_ids).astype(str))
        known = (users >= 0) & (items >= 0)
        base = (users.astype(np.int64) * self.n_items + items) * self.day_span
        low = np.searchsorted(self.keys, base + days + 1, side="left")
        high = np.searchsorted(self.keys, base + days + window_days + 1, side="left")
        return np.where(known, high - low, 0).astype(np.int32)


def long_term_term(
    return_days: np.ndarray,  # (B,) int
    days: np.ndarray,  # (B,) decision days
    listened: np.ndarray,  # (B,) bool
    chosen_state: np.ndarray,  # (B, R) logged relationship state of the chosen candidate
    end_day: int,
    config: LongTermRewardConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """(long-term reward term (B,) float32, keep (B,) bool) for decision rows.

    ``keep`` is False for right-censored decisions under ``censored="drop"``.
    """
    window = config.return_window_days
    days = np.asarray(days, np.int64)
    observed = np.clip(end_day - 1 - days, 0, window)  # days of the window inside the log
    complete = observed >= window
    counted = np.asarray(return_days, np.float64)
    if config.censored == "scale":
        counted = np.where(complete, counted, counted * window / np.maximum(observed, 1))
    credit = np.asarray(listened, bool)
    if config.credit == "discovery":
        credit = credit & (np.asarray(chosen_state).max(axis=-1) <= 0)
    term = (config.return_weight * credit * counted).astype(np.float32)
    keep = complete if config.censored == "drop" else np.ones(len(days), bool)
    return term, keep


def chosen_relationship(table: pa.Table, n_betas: int) -> np.ndarray:
    """(B, R) logged relationship state of each decision's chosen candidate."""
    candidates = table["candidate_relationship"].combine_chunks()
    offsets = candidates.offsets.to_numpy()[:-1]
    values = candidates.values.to_numpy(zero_copy_only=False)
    chosen = table["chosen_index"].to_numpy().astype(np.int64)
    start = offsets + chosen * n_betas
    return values[start[:, None] + np.arange(n_betas)]


class LongTermColumn:
    """Decision rows (pyarrow) -> the same rows, censored ones dropped, plus
    ``long_term_reward``. A plain callable: Ray Data's ``map_batches`` and tests call it."""

    def __init__(
        self, index: ReturnDayIndex, config: LongTermRewardConfig, end_day: int, n_betas: int
    ) -> None:
        self.index = index
        self.config = config
        self.end_day = end_day
        self.n_betas = n_betas

    def __call__(self, table: pa.Table) -> pa.Table:
        days = table["day"].to_numpy().astype(np.int64)
        returns = self.index.count(
            table["user_id"].to_numpy(zero_copy_only=False),
            table["chosen_track_id"].to_numpy(zero_copy_only=False),
            days,
            self.config.return_window_days,
        )
        term, keep = long_term_term(
            returns,
            days,
            table["listened"].to_numpy(zero_copy_only=False),
            chosen_relationship(table, self.n_betas),
            self.end_day,
            self.config,
        )
        table = table.append_column(LONG_TERM_COLUMN, pa.array(term, pa.float32()))
        table = table.append_column("return_days", pa.array(returns, pa.int32()))
        return table.filter(pa.array(keep))


@dataclass(frozen=True)
class LongTermStepsSummary:
    """What ``write_long_term_offline_steps`` wrote."""

    steps: int
    decisions: int
    dropped_censored: int
    end_day: int
    mean_return_days_listened: float
    share_with_long_term_reward: float
    mean_long_term_reward: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def write_long_term_offline_steps(
    log_uri: str,
    out_uri: str,
    embedding_latents: np.ndarray,
    track_ids: Sequence[str],
    layout: ObservationLayout,
    config: LongTermRewardConfig,
    num_partitions: int | None = None,
    end_day: int | None = None,
) -> LongTermStepsSummary:
    """Log -> row-per-step offline data whose rewards carry the long-term term (Ray Data).

    ``end_day`` is the log's end (exclusive; default one past its last decision or listen
    day). Writes
    the steps, ``_layout.json`` and ``_reward.json`` (this config and the summary).
    """
    from rl import storage
    from rl.feedback.log import read_decisions
    from rl.feedback.offline_steps import decisions_to_offline_steps, write_steps
    from rl.longterm.listen_days import listen_days_from_log

    listen_days = listen_days_from_log(log_uri, engine="ray")
    index = ReturnDayIndex(listen_days, config.return_source)
    decisions = read_decisions(log_uri)
    n_decisions = decisions.count()
    if end_day is None:  # the log's last day with a decision or a listen, + 1
        last_decision_day = decisions.max("day") if n_decisions else -1
        end = max(index.end_day, int(last_decision_day) + 1)  # type: ignore[arg-type]
    else:
        end = int(end_day)
    # The index is captured by the function (pickled once per task); for logs of millions
    # of listen days it is tens of MB, which Ray ships through its object store.
    with_returns = decisions.map_batches(
        LongTermColumn(index, config, end, layout.n_betas), batch_format="pyarrow"
    ).materialize()
    kept = with_returns.count()
    stats = with_returns.select_columns([LONG_TERM_COLUMN, "return_days", "listened"]).to_pandas()
    listened = stats["listened"].to_numpy(bool)
    steps = decisions_to_offline_steps(
        with_returns.drop_columns(["return_days"]),
        embedding_latents,
        track_ids,
        layout,
        reward_config=config.immediate,
        num_partitions=num_partitions,
    )
    rows = write_steps(steps, out_uri, layout)
    summary = LongTermStepsSummary(
        steps=rows,
        decisions=n_decisions,
        dropped_censored=n_decisions - kept,
        end_day=end,
        mean_return_days_listened=float(stats["return_days"][listened].mean())
        if listened.any()
        else 0.0,
        share_with_long_term_reward=float((stats[LONG_TERM_COLUMN] > 0).mean())
        if len(stats)
        else 0.0,
        mean_long_term_reward=float(stats[LONG_TERM_COLUMN].mean()) if len(stats) else 0.0,
    )
    storage.write_json(
        storage.join(out_uri, REWARD_FILE),
        {"reward": "return-days", "config": config.to_dict(), "summary": summary.to_dict()},
    )
    return summary
