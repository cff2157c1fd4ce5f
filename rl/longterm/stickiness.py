"""Stickiness: expected return days to an item (paper sections 4.3.1 and 5.1.2, eq. 15).

Where it sits: built from the listen days (``relationship_states``) and taste vectors
(``taste``); read by the Q-scorers (``q_scoring``).

* ``discovery_dataset``: users who first listened to item i at day d with the whole
  window [d, d + horizon) inside the log (i.e. discovered "more than 60 days before the
  log's end"), their taste at discovery u_d and y = number of days in d+1 .. d+horizon-1
  (the next 59) on which they listened to i again, plus the window's minutes.
* ``StickinessModel``: per-item stickiness vectors by least squares regularised toward an
  informed prior mean v̄ (closed form, paper footnote 9),

      v_i = argmin_v Σ_{(u, y) ∈ D_i} (y − ⟨u, v⟩)² + λ‖v − v̄‖²
          = (UᵀU + λI)⁻¹ (Uᵀy + λ v̄),

  with u = [1, taste] (the 1 carries the item's baseline), v̄ the pooled fit over all
  discoveries (or over the item's group, e.g. its genre, itself shrunk to the pooled fit),
  so long-tail items with few or no discoveries fall back to the prior; and the
  unpersonalised shrunken mean S_i = (Σ y + κ S̄) / (n_i + κ).
* ``state_dataset`` / ``StateStickinessModel``: the general S(s, u, i) from any
  relationship state s (resurfacing, Corollary 1), the same shrunken ridge on
  features [1, s, √s, u] (√s lets the gain S(s⁺) − S(s⁻) depend on the state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rl.config_checks import require_positive
from rl.longterm.relationship_history import ListenDays
from rl.longterm.taste import UserDayFeatures


# ---------------------------------------------------------------------------------------
# Kernel: per-group ridge regression shrunk toward a prior coefficient vector
# ---------------------------------------------------------------------------------------
def shrunken_ridge(
    features: np.ndarray,  # (n, P)
    targets: np.ndarray,  # (n,)
    groups: np.ndarray,  # (n,) int in [0, n_groups)
    n_groups: int,
    l2: float,
    prior: np.ndarray,  # (P,) or (n_groups, P)
) -> np.ndarray:
    """(n_groups, P) solutions of (XᵀX + λI) v = Xᵀy + λ v̄ per group; empty groups get v̄."""
    features = np.asarray(features, np.float64)
    targets = np.asarray(targets, np.float64)
    groups = np.asarray(groups, np.int64)
    n_features = features.shape[1]
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0 (it makes every group's system solvable), got {l2}")
    prior = np.broadcast_to(np.asarray(prior, np.float64), (n_groups, n_features))
    gram = np.zeros((n_groups, n_features, n_features))
    # P(P+1)/2 bincounts instead of an (n, P, P) outer-product array: memory stays O(n).
    for a in range(n_features):
        for b in range(a, n_features):
            column = np.bincount(
                groups, weights=features[:, a] * features[:, b], minlength=n_groups
            )
            gram[:, a, b] = column
            gram[:, b, a] = column
    moment = np.stack(
        [
            np.bincount(groups, weights=features[:, a] * targets, minlength=n_groups)
            for a in range(n_features)
        ],
        axis=1,
    )
    lhs = gram + l2 * np.eye(n_features)
    rhs = moment + l2 * prior
    return np.linalg.solve(lhs, rhs[..., None])[..., 0]


def with_intercept(taste: np.ndarray) -> np.ndarray:
    """(n, D) -> (n, 1 + D): the constant carries the item's baseline return days."""
    taste = np.asarray(taste, np.float64)
    return np.concatenate([np.ones((len(taste), 1)), taste], axis=1)


# ---------------------------------------------------------------------------------------
# Discovery dataset
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscoveryDataset:
    """One row per discovery (first listen of a user to an item) with a fully observed window."""

    user: np.ndarray  # (n,) int64 user code (ListenDays.user_ids)
    item: np.ndarray  # (n,) int64 item code (ListenDays.track_ids)
    discovery_day: np.ndarray  # (n,) int32
    taste: np.ndarray  # (n, D) float32 taste at the start of the discovery day
    return_days: np.ndarray  # (n,) int32 listen days in d+1 .. d+horizon-1 (see return_source)
    minutes: np.ndarray  # (n,) float32 minutes with the item in d .. d+horizon-1
    from_recommendation: np.ndarray  # (n,) bool: the discovery day's listen came from a rec

    def __len__(self) -> int:
        return len(self.user)


def discovery_dataset(
    listen_days: ListenDays,
    taste_model: UserDayFeatures,
    horizon_days: int = 60,
    end_day: int | None = None,
    min_discovery_day: int = 0,
    return_source: str = "any",
) -> DiscoveryDataset:
    """Discoveries whose [d, d + horizon_days) window lies inside the log.

    ``end_day`` is the log's end (exclusive; default: one past the last listen day).
    ``min_discovery_day`` drops first listens that may predate the log (left censoring):
    a log that starts mid-history should set it to, e.g., 30.
    ``return_source``: "any" counts every later listen day; "organic" only days with an
    organic (unrecommended) listen. Why "organic": in a log, the incumbent recommender
    keeps re-recommending songs near what the user plays (40% of the return days of
    simulated discoveries are recommendation-only days), a channel a song recommended once
    elsewhere does not get; and in the Q-value each later recommendation earns its own
    credit, so the habit a discovery starts is its organic return.
    """
    if horizon_days < 2:
        raise ValueError(f"horizon_days must be >= 2, got {horizon_days}")
    if return_source not in ("any", "organic"):
        raise ValueError(f"return_source must be 'any' or 'organic', got {return_source!r}")
    end = listen_days.end_day if end_day is None else int(end_day)
    starts = listen_days.pair_starts()
    n_rows = len(listen_days)
    pair_of_row = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    first_day = listen_days.day[starts[:-1]].astype(np.int64)  # rows sorted by day within pair
    eligible = (first_day + horizon_days <= end) & (first_day >= min_discovery_day)
    row_first = first_day[pair_of_row] if n_rows else np.zeros(0, np.int64)
    in_window = listen_days.day < row_first + horizon_days
    returned = in_window & (listen_days.day > row_first)
    if return_source == "organic":
        returned = returned & listen_days.organic
    n_pairs = len(starts) - 1
    return_days = np.bincount(pair_of_row, weights=returned, minlength=n_pairs)
    minutes = np.bincount(pair_of_row, weights=listen_days.minutes * in_window, minlength=n_pairs)
    first_rows = starts[:-1][eligible]
    users = listen_days.user[first_rows]
    days = first_day[eligible]
    return DiscoveryDataset(
        user=users,
        item=listen_days.item[first_rows],
        discovery_day=days.astype(np.int32),
        taste=taste_model.transform(users, days),
        return_days=return_days[eligible].astype(np.int32),
        minutes=minutes[eligible].astype(np.float32),
        from_recommendation=listen_days.recommended[first_rows] & ~listen_days.organic[first_rows],
    )


# ---------------------------------------------------------------------------------------
# Stickiness vectors (discovery) and unpersonalised shrunken means
# ---------------------------------------------------------------------------------------
class StickinessModel:
    """Per-item stickiness vectors v_i and unpersonalised stickiness S_i (paper eq. 15-16).

    Objective per item i (u with a leading 1):  Σ_{(u,y) ∈ D_i} (y − ⟨u, v⟩)² + λ‖v − v̄_g(i)‖²,
    solved in closed form; v̄ is the pooled least-squares fit (ridge ``prior_l2``) over
    all discoveries, or, when ``item_groups`` is given, a per-group fit shrunk toward it
    with the same λ. S_i = (Σ_{D_i} y + κ S̄_g(i)) / (|D_i| + κ).

    Parameters
    ----------
    l2 : λ, strength of the pull toward the prior vector (in "discoveries' worth"); > 0.
    mean_shrinkage : κ, pseudo-count of the unpersonalised mean's prior; > 0.
    prior_l2 : small ridge of the pooled prior fit itself; > 0.
    horizon_days : predictions are clipped to [0, horizon_days - 1] (the return window).
    taste_distance : add the squared distance between the user's taste (the first D
        columns of u) and the item's latent, ‖u_taste − z_i‖² / mean ‖z − z̄‖², as a
        feature (needs ``item_latents`` in ``fit``). Why: people return more to songs near
        their taste, and discoveries in a log happen near the taste (candidates are
        neighbours of what is playing), so without it ⟨u, v_i⟩ learns the near-taste return
        rate and over-predicts for songs recommended farther away (the A/B banner's pools);
        the pooled prior then carries the distance slope to items with few discoveries.
    """

    def __init__(
        self,
        l2: float = 20.0,
        mean_shrinkage: float = 20.0,
        prior_l2: float = 1e-3,
        horizon_days: int = 60,
        taste_distance: bool = False,
    ) -> None:
        self.l2 = l2
        self.mean_shrinkage = mean_shrinkage
        self.prior_l2 = prior_l2
        self.horizon_days = horizon_days
        self.taste_distance = taste_distance
        require_positive(self, "l2", "mean_shrinkage", "prior_l2")

    def _features(self, taste: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B, F) u and (B,) or (B, K) items -> (B, P) or (B, K, P) regression features."""
        features = with_intercept(taste)
        if not self.taste_distance:
            return features if items.ndim == 1 else features[:, None, :]
        latents = self.item_latents_[np.clip(items, 0, len(self.item_latents_) - 1)]
        dim = latents.shape[-1]
        user = np.asarray(taste, np.float64)[:, :dim]
        if items.ndim == 2:
            user = user[:, None, :]
            features = np.broadcast_to(features[:, None, :], (*items.shape, features.shape[1]))
        distance = ((user - latents) ** 2).sum(axis=-1, keepdims=True) / self.distance_scale_
        return np.concatenate([features, distance], axis=-1)

    def fit(
        self,
        taste: np.ndarray,  # (n, D) taste at discovery
        return_days: np.ndarray,  # (n,)
        items: np.ndarray,  # (n,) int item index in [0, n_items)
        n_items: int,
        item_groups: np.ndarray | None = None,  # (n_items,) int group of each item
        item_latents: np.ndarray | None = None,  # (n_items, D), needed with taste_distance
    ) -> StickinessModel:
        items = np.asarray(items, np.int64)
        if self.taste_distance:
            if item_latents is None or len(item_latents) != n_items:
                raise ValueError("taste_distance needs item_latents with one row per item")
            self.item_latents_ = np.asarray(item_latents, np.float64)
            centred = self.item_latents_ - self.item_latents_.mean(axis=0)
            self.distance_scale_ = float(max((centred**2).sum(axis=1).mean(), 1e-12))
        features = self._features(taste, items)
        y = np.asarray(return_days, np.float64)
        if len(y) == 0:
            raise ValueError("no discoveries to fit stickiness on")
        pooled = shrunken_ridge(
            features, y, np.zeros(len(y), np.int64), 1, self.prior_l2, np.zeros(features.shape[1])
        )[0]
        pooled_mean = float(y.mean())
        if item_groups is None:  # one group: the prior is the pooled fit itself
            item_groups = np.zeros(n_items, np.int64)
            group_prior = pooled[None, :]
            group_mean = np.array([pooled_mean])
        else:
            item_groups = np.asarray(item_groups, np.int64)
            n_groups = int(item_groups.max()) + 1
            row_groups = item_groups[items]
            group_prior = shrunken_ridge(features, y, row_groups, n_groups, self.l2, pooled)
            group_count = np.bincount(row_groups, minlength=n_groups)
            group_sum = np.bincount(row_groups, weights=y, minlength=n_groups)
            group_mean = (group_sum + self.mean_shrinkage * pooled_mean) / (
                group_count + self.mean_shrinkage
            )

        self.pooled_vector_ = pooled
        self.prior_vectors_ = group_prior[item_groups]  # (I, 1 + D) v̄ per item
        self.stickiness_vectors_ = shrunken_ridge(
            features, y, items, n_items, self.l2, self.prior_vectors_
        )
        self.item_counts_ = np.bincount(items, minlength=n_items)
        item_sum = np.bincount(items, weights=y, minlength=n_items)
        prior_mean = group_mean[item_groups]
        self.prior_means_ = prior_mean
        self.unpersonalised_ = (item_sum + self.mean_shrinkage * prior_mean) / (
            self.item_counts_ + self.mean_shrinkage
        )
        self.n_items_ = n_items
        return self

    def predict(self, taste: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Personalised return days ⟨[1, u], v_i⟩ for (taste row, item) pairs, broadcast over
        ``items`` of shape (B,) or (B, K) with taste (B, D); clipped to the window."""
        items = np.asarray(items, np.int64)
        features = self._features(taste, items)  # (B, P) or (B, 1 | K, P)
        vectors = self.stickiness_vectors_[np.clip(items, 0, self.n_items_ - 1)]  # (B[,K], P)
        value = (features * vectors).sum(axis=-1)
        return np.clip(value, 0.0, self.horizon_days - 1)

    def predict_unpersonalised(self, items: np.ndarray) -> np.ndarray:
        """S_i for any-shaped int ``items``."""
        items = np.asarray(items, np.int64)
        return self.unpersonalised_[np.clip(items, 0, self.n_items_ - 1)]


# ---------------------------------------------------------------------------------------
# General state stickiness S(s, u, i) for resurfacing
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StateDataset:
    """(user, item, day) samples of pairs with history and a fully observed window."""

    user: np.ndarray  # (n,) int64
    item: np.ndarray  # (n,) int64
    day: np.ndarray  # (n,) int32 sampled day d
    state: np.ndarray  # (n, R) float32 relationship state at the start of d
    taste: np.ndarray  # (n, D) float32 taste at the start of d
    return_days: np.ndarray  # (n,) int32 listen days in d .. d+horizon-2 (horizon-1 days)
    organic_today: np.ndarray  # (n,) bool: organic listen to the item on day d

    def __len__(self) -> int:
        return len(self.user)


def state_dataset(
    listen_days: ListenDays,
    taste_model: UserDayFeatures,
    betas: tuple[float, ...],
    horizon_days: int = 60,
    samples_per_pair: int = 1,
    max_samples: int = 500_000,
    seed: int = 0,
    end_day: int | None = None,
) -> StateDataset:
    """Sample days d after each pair's first listen with [d, d + horizon - 1) in the log.

    S(s, u, i) counts listen days in the horizon − 1 days starting at d, the same span as
    the discovery dataset's return days (those start the day after the first listen).
    """
    rng = np.random.default_rng(seed)
    end = listen_days.end_day if end_day is None else int(end_day)
    span = horizon_days - 1
    starts = listen_days.pair_starts()
    first_day = listen_days.day[starts[:-1]].astype(np.int64)
    last_start = end - span  # latest d with a full window
    eligible = np.flatnonzero(first_day + 1 <= last_start)
    pair = np.repeat(eligible, samples_per_pair)
    if len(pair) > max_samples:
        pair = rng.choice(pair, size=max_samples, replace=False)
    low = first_day[pair] + 1
    day = low + np.floor(rng.random(len(pair)) * (last_start - low + 1)).astype(np.int64)
    # Expand each sample to all of its pair's listen rows (<= number of log days each).
    lengths = np.diff(starts)[pair]
    sample_of_row = np.repeat(np.arange(len(pair)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = np.repeat(starts[pair], lengths) + offsets
    row_day = listen_days.day[rows].astype(np.int64)
    sample_day = day[sample_of_row]
    betas_arr = np.asarray(betas, np.float64)
    past = row_day < sample_day
    weights = (
        past[:, None]
        * (1.0 - betas_arr)
        * betas_arr ** np.maximum(sample_day - 1 - row_day, 0)[:, None]
    )
    state = np.stack(
        [
            np.bincount(sample_of_row, weights=weights[:, r], minlength=len(pair))
            for r in range(len(betas_arr))
        ],
        axis=1,
    )
    in_window = (row_day >= sample_day) & (row_day < sample_day + span)
    organic_today = (row_day == sample_day) & listen_days.organic[rows]
    users = listen_days.user[starts[pair]]
    return StateDataset(
        user=users,
        item=listen_days.item[starts[pair]],
        day=day.astype(np.int32),
        state=state.astype(np.float32),
        taste=taste_model.transform(users, day),
        return_days=np.bincount(sample_of_row, weights=in_window, minlength=len(pair)).astype(
            np.int32
        ),
        organic_today=np.bincount(sample_of_row, weights=organic_today, minlength=len(pair)) > 0,
    )


def state_features(state: np.ndarray, taste: np.ndarray) -> np.ndarray:
    """(..., R), (..., D) -> (..., 1 + 2R + D) features [1, s, √s, u]."""
    state = np.clip(np.asarray(state, np.float64), 0.0, 1.0)
    taste = np.asarray(taste, np.float64)
    ones = np.ones((*state.shape[:-1], 1))
    return np.concatenate([ones, state, np.sqrt(state), taste], axis=-1)


class StateStickinessModel:
    """S(s, u, i): expected listen days in the next horizon − 1 days from state s.

    Per item, ridge regression of return days on [1, s, √s, u] shrunk toward the pooled
    fit (same closed form as ``StickinessModel``). Used by the resurfacing Q-value
    [P(listen|rec) − P(org)] · [1 + S(s⁺) − S(s⁻)].
    """

    def __init__(self, l2: float = 50.0, prior_l2: float = 1e-3, horizon_days: int = 60) -> None:
        if not l2 > 0 or not prior_l2 > 0:
            raise ValueError(f"l2 and prior_l2 must be > 0, got {l2}, {prior_l2}")
        self.l2 = l2
        self.prior_l2 = prior_l2
        self.horizon_days = horizon_days

    def fit(self, state, taste, return_days, items, n_items: int) -> StateStickinessModel:
        features = state_features(state, taste)
        y = np.asarray(return_days, np.float64)
        if len(y) == 0:
            raise ValueError("no state samples to fit on")
        self.pooled_vector_ = shrunken_ridge(
            features, y, np.zeros(len(y), np.int64), 1, self.prior_l2, np.zeros(features.shape[1])
        )[0]
        self.item_vectors_ = shrunken_ridge(
            features, y, np.asarray(items, np.int64), n_items, self.l2, self.pooled_vector_
        )
        self.n_items_ = n_items
        return self

    def predict(self, state: np.ndarray, taste: np.ndarray, items: np.ndarray) -> np.ndarray:
        """state (B, K, R), taste (B, D), items (B, K) -> (B, K) return days (clipped)."""
        items = np.clip(np.asarray(items, np.int64), 0, self.n_items_ - 1)
        taste_b = np.broadcast_to(
            np.asarray(taste)[:, None, :], (*items.shape, np.shape(taste)[-1])
        )
        features = state_features(state, taste_b)
        value = np.einsum("bkp,bkp->bk", features, self.item_vectors_[items])
        return np.clip(value, 0.0, self.horizon_days - 1)
