"""Slow-moving user taste vectors u from listening history (paper section 4.1, item 1).

Where it sits: after ``relationship_states`` has reduced the log to listen days, the taste
of a user at the start of day d is an exponentially weighted mean of the latents of the
items they listened to before d:

    u_d = Σ_{t_j < d} rho^(d-1-t_j) z_{i_j} / Σ_{t_j < d} rho^(d-1-t_j),   rho = 0.5^(1/half_life)

(one term per distinct item per day). Weighting numerator and denominator alike keeps a new
user's taste an average rather than shrinking it to zero; users with no history get the
population mean (``prior_``). The stickiness regression pairs these vectors with return
days (taste at discovery), and the clickiness model uses them as user features.

Computation: with weights rho^(-t) the common factor rho^(d-1) cancels from the ratio, so
u_d is a ratio of per-user cumulative sums read at the user's last listen before d: one
sort, one cumsum and one searchsorted for any number of (user, day) queries.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import pandas as pd

from rl.longterm.relationship_history import ListenDays


class UserDayFeatures(Protocol):
    """Anything that gives a user's feature vector at the start of a day.

    ``TasteModel``, ``LoggedTaste`` and ``UserFeatures`` all meet it; the stickiness
    datasets read u through it.
    """

    def transform(self, users: np.ndarray, days: np.ndarray) -> np.ndarray:
        """(n,) user codes and (n,) days -> (n, F) features."""
        ...


class TasteModel:
    """Exponentially weighted mean latent of what a user listened to.

    Parameters
    ----------
    half_life_days : days after which a listen's weight halves; ``math.inf`` gives the plain
        mean of the whole history. Must be > 0. Taste is slow-moving by design: 30+ days.
    """

    def __init__(self, half_life_days: float = 60.0) -> None:
        if not half_life_days > 0:
            raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
        self.half_life_days = half_life_days

    @property
    def decay(self) -> float:
        """rho, the daily weight decay."""
        return 1.0 if math.isinf(self.half_life_days) else 0.5 ** (1.0 / self.half_life_days)

    def fit(self, listen_days: ListenDays, item_latents: np.ndarray) -> TasteModel:
        """Index the listens; ``item_latents`` (I, D) is aligned with ``listen_days.track_ids``."""
        item_latents = np.asarray(item_latents, np.float64)
        if item_latents.ndim != 2 or len(item_latents) != listen_days.n_items:
            raise ValueError(
                f"item_latents must be (n_items={listen_days.n_items}, D), got {item_latents.shape}"
            )
        n_days = listen_days.end_day + 1
        order = np.argsort(listen_days.user * n_days + listen_days.day, kind="stable")
        user = listen_days.user[order]
        day = listen_days.day[order].astype(np.int64)
        latents = item_latents[listen_days.item[order]]
        origin = int(day.min()) if len(day) else 0
        weight = self.decay ** (-(day - origin).astype(np.float64))  # grows with t; ratio-safe
        self.origin_ = origin
        self.sorted_key_ = user * n_days + day
        self.n_days_ = n_days
        self.cum_weight_ = np.cumsum(weight)
        self.cum_latent_ = np.cumsum(weight[:, None] * latents, axis=0)
        # Index of each user's first row, so per-user sums are differences of global cumsums.
        self.user_start_ = np.searchsorted(user, np.arange(listen_days.n_users), side="left")
        self.prior_ = latents.mean(axis=0) if len(latents) else np.zeros(item_latents.shape[1])
        self.n_users_ = listen_days.n_users
        self.latent_dim_ = item_latents.shape[1]
        return self

    def transform(self, users: np.ndarray, days: np.ndarray) -> np.ndarray:
        """(n, D) float32 taste of user codes ``users`` at the start of ``days`` (history < day)."""
        users = np.asarray(users, np.int64)
        days = np.minimum(np.asarray(days, np.int64), self.n_days_ - 1)
        # Last row of this user with day < query day.
        last = np.searchsorted(self.sorted_key_, users * self.n_days_ + days, side="left") - 1
        start = self.user_start_[users]
        has_history = last >= start
        out = np.tile(self.prior_, (len(users), 1))
        rows, first = last[has_history], start[has_history]
        before = first - 1
        cum_w = self.cum_weight_[rows] - np.where(before >= 0, self.cum_weight_[before], 0.0)
        prev_latent = np.where((before >= 0)[:, None], self.cum_latent_[np.maximum(before, 0)], 0.0)
        cum_z = self.cum_latent_[rows] - prev_latent
        out[has_history] = cum_z / cum_w[:, None]
        return out.astype(np.float32)

    def current(self) -> np.ndarray:
        """(U, D) taste of every user after the whole history."""
        return self.transform(np.arange(self.n_users_), np.full(self.n_users_, self.n_days_ - 1))


class LoggedTaste:
    """The taste vector the recommender logged (``user_taste`` of decision rows), by day.

    When the system already keeps user vectors (the simulator and the service log them on
    every decision), stickiness should be fitted on the same vectors it is scored with:
    the taste of a user at the start of day d is the one logged on their last decision day
    <= d; users with no decision by then fall back to ``fallback`` (a fitted ``TasteModel``).
    """

    def __init__(self, fallback: TasteModel) -> None:
        self.fallback = fallback

    def fit(self, users: np.ndarray, days: np.ndarray, tastes: np.ndarray) -> LoggedTaste:
        """``users`` (n,) int codes, ``days`` (n,), ``tastes`` (n, D); rows in any order."""
        users = np.asarray(users, np.int64)
        days = np.asarray(days, np.int64)
        self.n_days_ = int(days.max()) + 2 if len(days) else 1
        key = users * self.n_days_ + days
        # First row per (user, day): the taste at the start of that day.
        order = np.lexsort((np.arange(len(key)), key))
        key_sorted = key[order]
        first = np.concatenate([[True], np.diff(key_sorted) > 0]) if len(key) else np.zeros(0, bool)
        self.key_ = key_sorted[first]
        self.taste_ = np.asarray(tastes, np.float32)[order][first]
        return self

    def fit_decisions(self, user_ids: np.ndarray, decisions: pd.DataFrame) -> LoggedTaste:
        """Fit on decision rows (``user_id``, ``day``, ``user_taste`` columns); users are
        coded by their row in ``user_ids`` (the listen days' users), others are left out."""
        codes = pd.Index(user_ids).get_indexer(decisions["user_id"].to_numpy())
        known = codes >= 0
        latent_dim = len(self.fallback.prior_)
        tastes = (
            np.stack(decisions["user_taste"].to_numpy()[known])
            if known.any()
            else np.zeros((0, latent_dim))
        )
        return self.fit(codes[known], decisions["day"].to_numpy()[known], tastes)

    def transform(self, users: np.ndarray, days: np.ndarray) -> np.ndarray:
        users = np.asarray(users, np.int64)
        days = np.minimum(np.asarray(days, np.int64), self.n_days_ - 1)
        position = np.searchsorted(self.key_, users * self.n_days_ + days, side="right") - 1
        found = position >= 0
        found[found] = self.key_[position[found]] // self.n_days_ == users[found]
        out = self.fallback.transform(users, days)
        out[found] = self.taste_[position[found]]
        return out


class ActivityModel:
    """Share of the last ``window_days`` days on which a user listened to anything.

    How often a user opens the app bounds how many days they can return to any song, so
    stickiness regressions pair it with the taste vector (``UserFeatures``).
    """

    def __init__(self, window_days: int = 28) -> None:
        if window_days < 1:
            raise ValueError(f"window_days must be >= 1, got {window_days}")
        self.window_days = window_days

    def fit(self, listen_days: ListenDays) -> ActivityModel:
        n_days = listen_days.end_day + 1
        self.n_days_ = n_days
        self.key_ = np.unique(listen_days.user * n_days + listen_days.day)  # distinct user-days
        return self

    def transform(self, users: np.ndarray, days: np.ndarray) -> np.ndarray:
        """(n,) share of days in [d - window, d) with a listen."""
        users = np.asarray(users, np.int64)
        days = np.minimum(np.asarray(days, np.int64), self.n_days_ - 1)
        high = np.searchsorted(self.key_, users * self.n_days_ + days, side="left")
        low = np.searchsorted(
            self.key_, users * self.n_days_ + np.maximum(days - self.window_days, 0), side="left"
        )
        span = np.clip(days, 1, self.window_days)
        return ((high - low) / span).astype(np.float32)


class UserFeatures:
    """u for the stickiness models: [taste (D), activity share (1)] at the start of a day."""

    def __init__(self, taste: UserDayFeatures, activity: ActivityModel) -> None:
        self.taste = taste
        self.activity = activity

    def transform(self, users: np.ndarray, days: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [self.taste.transform(users, days), self.activity.transform(users, days)[:, None]],
            axis=1,
        )
