"""K-means reward propagation: reference checks and a recovery test on synthetic songs."""

import numpy as np
import pandas as pd
import pytest

from rl.songs.reward_propagation import ClusterRewardPropagation, evaluate_propagation


def clustered_latents(seed=0, n_clusters=8, per_cluster=150):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, (n_clusters, 2))
    latents = np.concatenate([c + rng.standard_normal((per_cluster, 2)) for c in centres])
    return latents, np.repeat(np.arange(n_clusters), per_cluster), centres


def test_predict_matches_the_formula_song_by_song():
    latents, _, _ = clustered_latents()
    propagation = ClusterRewardPropagation(n_clusters=8, songs_per_cluster=4, decay_rate=0.7)
    measured = propagation.fit_clusters(latents).select_measured(np.arange(len(latents)))
    rewards = np.random.default_rng(1).normal(size=len(measured))
    propagation.set_measured(measured, rewards)
    predicted = propagation.predict()
    for song in range(0, len(latents), 37):  # slow reference
        label = propagation.labels_[song]
        members = np.flatnonzero(propagation.labels_ == label)
        centroid = propagation.centroids_[label]
        d_max = max(np.linalg.norm(latents[m] - centroid) for m in members)
        in_cluster = [
            r for r, m in zip(rewards, measured, strict=True) if propagation.labels_[m] == label
        ]
        expected = np.mean(in_cluster) * np.exp(
            -0.7 * np.linalg.norm(latents[song] - centroid) / d_max
        )
        assert predicted[song] == pytest.approx(expected, rel=1e-9)


def test_select_measured_takes_the_songs_nearest_each_centroid():
    latents, _, _ = clustered_latents()
    propagation = ClusterRewardPropagation(n_clusters=8, songs_per_cluster=4).fit_clusters(latents)
    candidates = np.arange(0, len(latents), 2)
    measured = propagation.select_measured(candidates)
    assert len(measured) == 32
    for label in range(8):
        members = candidates[propagation.labels_[candidates] == label]
        nearest = members[np.argsort(propagation.distance_[members])[:4]]
        assert set(nearest) == set(measured[propagation.labels_[measured] == label])


def test_propagation_recovers_cluster_level_rewards_better_than_global_mean():
    latents, truth_cluster, centres = clustered_latents(seed=2)
    rng = np.random.default_rng(3)
    cluster_reward = rng.normal(0.0, 1.0, len(centres))
    song_reward = cluster_reward[truth_cluster] + rng.normal(0, 0.2, len(latents))
    track_ids = [f"t{i}" for i in range(len(latents))]
    plays = rng.integers(0, len(latents), 60_000)
    decisions = pd.DataFrame(
        {
            "chosen_track_id": np.asarray(track_ids)[plays],
            "reward": song_reward[plays] + rng.normal(0, 0.5, len(plays)),
        }
    )
    report = evaluate_propagation(
        decisions,
        latents,
        track_ids,
        n_clusters=8,
        songs_per_cluster=4,
        decay_rate=0.0,
        min_plays=10,
    )
    assert report.n_measured == 32 and report.n_evaluated == report.n_songs_with_data - 32
    assert report.correlation > 0.8
    assert report.mae < 0.6 * report.baseline_mae


def test_bad_parameters_rejected():
    with pytest.raises(ValueError, match="n_clusters must be >= 1"):
        ClusterRewardPropagation(n_clusters=0)
    with pytest.raises(ValueError, match="decay_rate must be >= 0"):
        ClusterRewardPropagation(decay_rate=-1.0)
