"""Reward propagation by clustering (the blog's section 7).

Only a few songs get measured feedback; every other song's reward is estimated from the
songs near it in latent space:

1. K-means on the song latents.
2. In each cluster, the ``songs_per_cluster`` (about 4) measured songs nearest the
   centroid carry measured rewards; the cluster reward r_c is their mean.
3. Every other song i of cluster c: d = ||z_i - centroid_c||, normalised by the largest
   distance in the cluster, and

       r_est(i) = r_c * decay(d / d_max),   decay(x) = exp(-decay_rate * x)

   so estimates fall smoothly with the distance from the centroid (decay(0) = 1).

``evaluate_propagation`` checks it on a feedback log: the songs with enough plays have a
"true" mean reward; the measured songs are picked per cluster, and the propagated
estimates of the others are compared with their true means (Pearson correlation, MAE)
against the global-mean baseline (every unmeasured song gets the mean measured reward).
`encore propagate-rewards --log URI` runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.cluster import KMeans


class ClusterRewardPropagation:
    """K-means reward propagation (see the module docstring).

    Parameters
    ----------
    n_clusters : number of K-means clusters (>= 1).
    songs_per_cluster : measured songs per cluster (the blog: about 4).
    decay_rate : rate of the exponential decay in the normalised distance (>= 0; 0 gives
        every song its cluster's reward).
    random_state : K-means seed.
    """

    def __init__(
        self,
        n_clusters: int = 50,
        songs_per_cluster: int = 4,
        decay_rate: float = 0.5,
        random_state: int = 0,
    ) -> None:
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
        if songs_per_cluster < 1:
            raise ValueError(f"songs_per_cluster must be >= 1, got {songs_per_cluster}")
        if not decay_rate >= 0:
            raise ValueError(f"decay_rate must be >= 0, got {decay_rate}")
        self.n_clusters = n_clusters
        self.songs_per_cluster = songs_per_cluster
        self.decay_rate = decay_rate
        self.random_state = random_state

    def fit_clusters(self, latents: np.ndarray) -> ClusterRewardPropagation:
        """K-means on all song latents (N, D): centroids_, labels_, max_distance_."""
        latents = np.asarray(latents, np.float64)
        n_clusters = min(self.n_clusters, len(latents))
        self.kmeans_ = KMeans(n_clusters=n_clusters, n_init=3, random_state=self.random_state).fit(
            latents
        )
        self.labels_ = self.kmeans_.labels_
        self.centroids_ = self.kmeans_.cluster_centers_
        self.distance_ = np.linalg.norm(latents - self.centroids_[self.labels_], axis=1)
        self.max_distance_ = np.zeros(n_clusters)
        np.maximum.at(self.max_distance_, self.labels_, self.distance_)
        return self

    def select_measured(self, candidates: np.ndarray) -> np.ndarray:
        """Rows (among ``candidates``, songs that can be measured) nearest each centroid:
        up to ``songs_per_cluster`` per cluster."""
        candidates = np.asarray(candidates, np.int64)
        order = np.lexsort((self.distance_[candidates], self.labels_[candidates]))
        ranked = candidates[order]
        labels = self.labels_[ranked]
        rank_in_cluster = np.arange(len(ranked)) - np.searchsorted(labels, labels)
        return np.sort(ranked[rank_in_cluster < self.songs_per_cluster])

    def fit(
        self, latents: np.ndarray, measured_rows: np.ndarray, measured_rewards: np.ndarray
    ) -> ClusterRewardPropagation:
        """Cluster the latents, then set each cluster's reward from its measured songs
        (clusters with none get the mean of all measured rewards)."""
        self.fit_clusters(latents)
        return self.set_measured(measured_rows, measured_rewards)

    def set_measured(
        self, measured_rows: np.ndarray, measured_rewards: np.ndarray
    ) -> ClusterRewardPropagation:
        measured_rows = np.asarray(measured_rows, np.int64)
        measured_rewards = np.asarray(measured_rewards, np.float64)
        if len(measured_rows) == 0 or len(measured_rows) != len(measured_rewards):
            raise ValueError("need >= 1 measured song and one reward per measured song")
        n_clusters = len(self.centroids_)
        sums = np.bincount(
            self.labels_[measured_rows], weights=measured_rewards, minlength=n_clusters
        )
        counts = np.bincount(self.labels_[measured_rows], minlength=n_clusters)
        self.global_reward_ = float(measured_rewards.mean())
        self.cluster_reward_ = np.where(
            counts > 0, sums / np.maximum(counts, 1), self.global_reward_
        )
        self.cluster_measured_ = counts
        return self

    def decay(self, normalised_distance: np.ndarray) -> np.ndarray:
        return np.exp(-self.decay_rate * np.asarray(normalised_distance))

    def predict(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Propagated reward of catalog rows (default: every song)."""
        rows = np.arange(len(self.labels_)) if rows is None else np.asarray(rows, np.int64)
        labels = self.labels_[rows]
        normalised = self.distance_[rows] / np.maximum(self.max_distance_[labels], 1e-12)
        return self.cluster_reward_[labels] * self.decay(normalised)


@dataclass(frozen=True)
class PropagationReport:
    """How well propagated rewards match the true mean rewards of unmeasured songs."""

    n_songs_with_data: int
    n_measured: int
    n_evaluated: int
    correlation: float
    mae: float
    baseline_mae: float  # every unmeasured song gets the global mean measured reward
    cluster_mean_correlation: float  # propagation without the distance decay
    cluster_mean_mae: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def song_reward_table(decisions: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Mean logged reward and play count per chosen track."""
    frame = (
        decisions
        if isinstance(decisions, pd.DataFrame)
        else decisions.select(["chosen_track_id", "reward"]).to_pandas()
    )
    return (
        frame.groupby("chosen_track_id")["reward"]
        .agg(["mean", "count"])
        .rename(columns={"mean": "true_reward", "count": "plays"})
    )


def evaluate_propagation(
    decisions: pa.Table | pd.DataFrame,
    latents: np.ndarray,
    track_ids: Sequence[str] | np.ndarray,
    n_clusters: int = 100,
    songs_per_cluster: int = 4,
    decay_rate: float = 0.5,
    min_plays: int = 20,
    random_state: int = 0,
) -> PropagationReport:
    """Measure ``songs_per_cluster`` songs per cluster, propagate, compare with the truth.

    A song's true reward is its mean logged reward over >= ``min_plays`` plays; measured
    songs are drawn from those songs (nearest the centroids), the rest are evaluated.
    """
    songs = song_reward_table(decisions)
    songs = songs[songs["plays"] >= min_plays]
    index = pd.Index(np.asarray(track_ids).astype(str))
    rows = index.get_indexer(songs.index.astype(str))
    songs = songs[rows >= 0]
    rows = rows[rows >= 0]
    if len(rows) < 2:
        raise ValueError(
            f"fewer than 2 songs with >= {min_plays} plays in the log and the embedding"
        )
    propagation = ClusterRewardPropagation(n_clusters, songs_per_cluster, decay_rate, random_state)
    propagation.fit_clusters(latents)
    true_of_row = pd.Series(songs["true_reward"].to_numpy(), index=rows)
    measured = propagation.select_measured(rows)
    propagation.set_measured(measured, true_of_row.loc[measured].to_numpy())
    evaluated = np.setdiff1d(rows, measured)
    truth = true_of_row.loc[evaluated].to_numpy()
    estimate = propagation.predict(evaluated)
    cluster_mean = propagation.cluster_reward_[propagation.labels_[evaluated]]
    return PropagationReport(
        n_songs_with_data=len(rows),
        n_measured=len(measured),
        n_evaluated=len(evaluated),
        correlation=_pearson(estimate, truth),
        mae=float(np.mean(np.abs(estimate - truth))) if len(truth) else float("nan"),
        baseline_mae=float(np.mean(np.abs(propagation.global_reward_ - truth)))
        if len(truth)
        else float("nan"),
        cluster_mean_correlation=_pearson(cluster_mean, truth),
        cluster_mean_mae=float(np.mean(np.abs(cluster_mean - truth)))
        if len(truth)
        else float("nan"),
    )
