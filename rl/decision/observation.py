"""The decision-time observation: one flat float vector, shared by every component.

The simulator and the Gymnasium env build it, the offline converter writes it into
RLlib's ``obs`` column, the actor-critic RLModule splits it, and the served Scorer builds
it from a request. Writing the layout down once keeps the four in agreement.

Layout (D = latent_dim, C = context_dim, K = k candidates, R = len(betas)):

    [ current_latent (D) | user_taste (D) | context (C) |
      candidate_latents (K*D) | candidate_relationship (K*R) | candidate_mask (K) |
      candidate_song_features (K*F) ]

``context`` is (sin, cos) of hour-of-day and of weekday. ``candidate_relationship`` is
the paper's content-relationship state s_i (one EMA per forgetting factor) of the user
with each candidate; 0 means never listened. ``candidate_mask`` is 1 for a real candidate
and 0 for padding when fewer than K candidates exist.

``candidate_song_features`` (F = ``song_feature_dim``, 0 by default) are what the logs
revealed about each candidate song (rl/longterm/song_table.py: clickiness logit,
stickiness, personalised return days, popularity). They sit *after* the mask, so a reader
built for the layout without them (the myopic listen model, the Q-scorers) reads the same
offsets from an observation that carries them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_BETAS: tuple[float, ...] = (0.5, 0.9, 0.97, 0.99)


def encode_context(hour: np.ndarray | float, weekday: np.ndarray | float) -> np.ndarray:
    """(…,) hour in [0, 24) and weekday in [0, 7) -> (…, 4) cyclic encoding."""
    hour_angle = 2.0 * np.pi * np.asarray(hour, np.float64) / 24.0
    day_angle = 2.0 * np.pi * np.asarray(weekday, np.float64) / 7.0
    return np.stack(
        [np.sin(hour_angle), np.cos(hour_angle), np.sin(day_angle), np.cos(day_angle)], axis=-1
    ).astype(np.float32)


@dataclass(frozen=True)
class ObservationLayout:
    """Sizes of the observation's parts."""

    k: int = 4
    """Number of candidates the policy chooses between (the blog's top-4)."""
    latent_dim: int = 5
    """Song latent size (the VAE's latent)."""
    betas: tuple[float, ...] = field(default=DEFAULT_BETAS)
    """Forgetting factors of the relationship state, each in (0, 1)."""
    context_dim: int = 4
    """Context features: sin/cos hour, sin/cos weekday."""
    song_feature_dim: int = 0
    """Per-candidate song features learned from the logs (``SongFeatureTable``); 0 = none."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not self.betas or not all(0.0 < b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be non-empty and each in (0, 1), got {self.betas}")
        if self.song_feature_dim < 0:
            raise ValueError(f"song_feature_dim must be >= 0, got {self.song_feature_dim}")

    @property
    def n_betas(self) -> int:
        return len(self.betas)

    @property
    def state_dim(self) -> int:
        """Size of the candidate-independent part (current, taste, context)."""
        return 2 * self.latent_dim + self.context_dim

    @property
    def candidate_dim(self) -> int:
        """Per-candidate features: latent + relationship state + song features."""
        return self.latent_dim + self.n_betas + self.song_feature_dim

    @property
    def mask_offset(self) -> int:
        """Index of the first ``candidate_mask`` entry in the flat observation."""
        return self.state_dim + self.k * (self.latent_dim + self.n_betas)

    @property
    def size(self) -> int:
        return self.state_dim + self.k * (self.candidate_dim + 1)

    def without_song_features(self) -> ObservationLayout:
        """The same layout with F = 0 (what the simulator builds before features are added)."""
        return ObservationLayout(self.k, self.latent_dim, self.betas, self.context_dim)

    def build(
        self,
        current_latent: np.ndarray,  # (B, D)
        user_taste: np.ndarray,  # (B, D)
        context: np.ndarray,  # (B, C)
        candidate_latents: np.ndarray,  # (B, K, D)
        candidate_relationship: np.ndarray,  # (B, K, R)
        candidate_mask: np.ndarray,  # (B, K)
        candidate_song_features: np.ndarray | None = None,  # (B, K, F)
    ) -> np.ndarray:
        """Concatenate the parts into (B, size) float32 observations."""
        batch = len(current_latent)
        f = self.song_feature_dim
        if (candidate_song_features is None) != (f == 0):
            raise ValueError(
                f"the layout has song_feature_dim={f}: candidate_song_features must be "
                + ("given" if f else "None")
            )
        parts = [
            np.asarray(current_latent, np.float32).reshape(batch, self.latent_dim),
            np.asarray(user_taste, np.float32).reshape(batch, self.latent_dim),
            np.asarray(context, np.float32).reshape(batch, self.context_dim),
            np.asarray(candidate_latents, np.float32).reshape(batch, self.k * self.latent_dim),
            np.asarray(candidate_relationship, np.float32).reshape(batch, self.k * self.n_betas),
            np.asarray(candidate_mask, np.float32).reshape(batch, self.k),
        ]
        if candidate_song_features is not None:
            parts.append(np.asarray(candidate_song_features, np.float32).reshape(batch, self.k * f))
        return np.concatenate(parts, axis=1)

    def with_song_features(
        self, base_obs: np.ndarray, candidate_song_features: np.ndarray
    ) -> np.ndarray:
        """(B, base size) observations built without features + (B, K, F) -> (B, size)."""
        base = np.asarray(base_obs, np.float32)
        features = np.asarray(candidate_song_features, np.float32).reshape(
            len(base), self.k * self.song_feature_dim
        )
        return np.concatenate([base[:, : self.mask_offset + self.k], features], axis=1)

    def split(self, obs: Any) -> dict[str, Any]:
        """Inverse of ``build`` for numpy arrays or torch tensors of shape (B, size)."""
        d, c, k, r, f = (
            self.latent_dim,
            self.context_dim,
            self.k,
            self.n_betas,
            self.song_feature_dim,
        )
        batch = obs.shape[0]
        offsets = np.cumsum([0, d, d, c, k * d, k * r, k, k * f])
        piece = [obs[:, offsets[i] : offsets[i + 1]] for i in range(7)]
        return {
            "current_latent": piece[0],
            "user_taste": piece[1],
            "context": piece[2],
            "candidate_latents": piece[3].reshape(batch, k, d),
            "candidate_relationship": piece[4].reshape(batch, k, r),
            "candidate_mask": piece[5],
            "candidate_song_features": piece[6].reshape(batch, k, f),
        }

    def to_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "k": self.k,
            "latent_dim": self.latent_dim,
            "betas": list(self.betas),
            "context_dim": self.context_dim,
        }
        if self.song_feature_dim:  # absent = 0: layouts saved before song features still match
            state["song_feature_dim"] = self.song_feature_dim
        return state

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ObservationLayout:
        return cls(
            k=int(state["k"]),
            latent_dim=int(state["latent_dim"]),
            betas=tuple(float(b) for b in state["betas"]),
            context_dim=int(state.get("context_dim", 4)),
            song_feature_dim=int(state.get("song_feature_dim", 0)),
        )
