"""The decision-time observation: one flat float vector, shared by every component.

The simulator and the Gymnasium env build it, the offline converter writes it into
RLlib's ``obs`` column, the actor-critic RLModule splits it, and the served Scorer builds
it from a request. Writing the layout down once keeps the four in agreement.

Layout (D = latent_dim, C = context_dim, K = k candidates, R = len(betas)):

    [ current_latent (D) | user_taste (D) | context (C) |
      candidate_latents (K*D) | candidate_relationship (K*R) | candidate_mask (K) ]

``context`` is (sin, cos) of hour-of-day and of weekday. ``candidate_relationship`` is
the paper's content-relationship state s_i (one EMA per forgetting factor) of the user
with each candidate; 0 means never listened. ``candidate_mask`` is 1 for a real candidate
and 0 for padding when fewer than K candidates exist.
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

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not self.betas or not all(0.0 < b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be non-empty and each in (0, 1), got {self.betas}")

    @property
    def n_betas(self) -> int:
        return len(self.betas)

    @property
    def state_dim(self) -> int:
        """Size of the candidate-independent part (current, taste, context)."""
        return 2 * self.latent_dim + self.context_dim

    @property
    def candidate_dim(self) -> int:
        """Per-candidate features: latent + relationship state."""
        return self.latent_dim + self.n_betas

    @property
    def size(self) -> int:
        return self.state_dim + self.k * (self.candidate_dim + 1)

    def build(
        self,
        current_latent: np.ndarray,  # (B, D)
        user_taste: np.ndarray,  # (B, D)
        context: np.ndarray,  # (B, C)
        candidate_latents: np.ndarray,  # (B, K, D)
        candidate_relationship: np.ndarray,  # (B, K, R)
        candidate_mask: np.ndarray,  # (B, K)
    ) -> np.ndarray:
        """Concatenate the parts into (B, size) float32 observations."""
        batch = len(current_latent)
        parts = [
            np.asarray(current_latent, np.float32).reshape(batch, self.latent_dim),
            np.asarray(user_taste, np.float32).reshape(batch, self.latent_dim),
            np.asarray(context, np.float32).reshape(batch, self.context_dim),
            np.asarray(candidate_latents, np.float32).reshape(batch, self.k * self.latent_dim),
            np.asarray(candidate_relationship, np.float32).reshape(batch, self.k * self.n_betas),
            np.asarray(candidate_mask, np.float32).reshape(batch, self.k),
        ]
        return np.concatenate(parts, axis=1)

    def split(self, obs: Any) -> dict[str, Any]:
        """Inverse of ``build`` for numpy arrays or torch tensors of shape (B, size)."""
        d, c, k, r = self.latent_dim, self.context_dim, self.k, self.n_betas
        batch = obs.shape[0]
        offsets = np.cumsum([0, d, d, c, k * d, k * r, k])
        piece = [obs[:, offsets[i] : offsets[i + 1]] for i in range(6)]
        return {
            "current_latent": piece[0],
            "user_taste": piece[1],
            "context": piece[2],
            "candidate_latents": piece[3].reshape(batch, k, d),
            "candidate_relationship": piece[4].reshape(batch, k, r),
            "candidate_mask": piece[5],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "latent_dim": self.latent_dim,
            "betas": list(self.betas),
            "context_dim": self.context_dim,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ObservationLayout:
        return cls(
            k=int(state["k"]),
            latent_dim=int(state["latent_dim"]),
            betas=tuple(float(b) for b in state["betas"]),
            context_dim=int(state.get("context_dim", 4)),
        )
