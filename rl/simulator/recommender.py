"""The recommender side of the simulator: candidates, observations, the policy's pick.

RecSim NG's "recommender" entity. For each live session: the kNN candidates of the
current song come from the corpus's precomputed neighbour table (songs already played in
the session excluded), the observation is built with the shared ``ObservationLayout``
(exactly what the served Scorer builds from a request), and a ``DecisionPolicy`` gives
the probabilities the pick is drawn from. The probability of the pick is the propensity
that goes into the log as ``behaviour_logp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rl.decision.observation import ObservationLayout, encode_context
from rl.decision.policies import DecisionPolicy, sample_actions
from rl.simulator.corpus import Corpus


def retrieve_candidates(
    neighbours: np.ndarray,  # (N, W) int32 neighbour table
    current: np.ndarray,  # (B,) song rows
    history: np.ndarray,  # (B, H) song rows played in the session, -1 padding
    k: int,
) -> np.ndarray:
    """(B, k) int64 candidate rows, nearest first, -1 padding when fewer than k remain."""
    table = neighbours[current].astype(np.int64)  # (B, W)
    valid = ~(table[:, :, None] == history[:, None, :]).any(axis=2) & (table >= 0)
    # The j-th valid neighbour goes to column j (a stable compaction without a sort).
    column = np.cumsum(valid, axis=1) - 1
    keep = valid & (column < k)
    rows = np.full((len(table), k), -1, np.int64)
    batch, position = np.nonzero(keep)
    rows[batch, column[batch, position]] = table[batch, position]
    return rows


class SongFeatureSource(Protocol):
    """Per-candidate song features learned from logs (rl/longterm/song_table.py), indexed
    by corpus row (``SongFeatureTable.aligned(corpus.track_ids)``)."""

    def candidate_features(self, rows: np.ndarray, taste: np.ndarray) -> np.ndarray:
        """(B, K) corpus rows and (B, D) tastes -> (B, K, F)."""
        ...


def observations_from_corpus(
    layout: ObservationLayout,
    corpus: Corpus,
    current: np.ndarray,  # (B,)
    taste: np.ndarray,  # (B, D)
    hour: np.ndarray,  # (B,)
    weekday: np.ndarray | int,
    candidates: np.ndarray,  # (B, K) rows, -1 padding
    relationship: np.ndarray,  # (B, K, R)
    song_features: SongFeatureSource | None = None,
) -> np.ndarray:
    """(B, layout.size) float32 observations; padded candidates get zero features.

    ``song_features`` fills the layout's per-candidate song features (needed when
    ``layout.song_feature_dim > 0``)."""
    mask = candidates >= 0
    candidate_latents = corpus.latents[np.maximum(candidates, 0)] * mask[..., None]
    weekday = np.broadcast_to(np.asarray(weekday), hour.shape)
    features = None
    if layout.song_feature_dim:
        if song_features is None:
            raise ValueError("the layout has song features: pass song_features")
        features = song_features.candidate_features(candidates, taste) * mask[..., None]
    return layout.build(
        current_latent=corpus.latents[current],
        user_taste=taste,
        context=encode_context(hour, weekday),
        candidate_latents=candidate_latents,
        candidate_relationship=relationship * mask[..., None],
        candidate_mask=mask,
        candidate_song_features=features,
    )


@dataclass(frozen=True)
class Decisions:
    """The policy's picks for B sessions."""

    probabilities: np.ndarray  # (B, K)
    actions: np.ndarray  # (B,) int64 chosen candidate index
    logp: np.ndarray  # (B,) float32 log-propensity of the pick


def decide(
    policies: Mapping[int, DecisionPolicy],
    arm_index: np.ndarray,  # (B,) which policy serves each session
    obs: np.ndarray,  # (B, size)
    rng: np.random.Generator,
) -> Decisions:
    """Ask each arm's policy for its sessions' probabilities, then draw the picks."""
    batch = len(obs)
    probabilities = None
    for arm, policy in policies.items():
        rows = np.flatnonzero(arm_index == arm)
        if not len(rows):
            continue
        arm_probabilities = np.asarray(policy.action_probabilities(obs[rows]), np.float64)
        if probabilities is None:
            probabilities = np.zeros((batch, arm_probabilities.shape[1]))
        probabilities[rows] = arm_probabilities
    if probabilities is None:
        raise ValueError("no policy serves these sessions")
    actions, logp = sample_actions(probabilities, rng)
    return Decisions(probabilities=probabilities, actions=actions, logp=logp)
