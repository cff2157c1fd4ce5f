"""The per-decision reward (the session reward, the blog's section 4), with a configurable shape.

Every logged decision carries the user's response: a skip level (0 = immediate skip,
1 = early skip, 2 = late skip, 3 = played through), the listen fraction and whether the
user liked the song. The reward turns that response into one number:

    played through (skip_level 3):   r = listen_fraction + like_weight * liked
    skipped (skip_level 0, 1, 2):    r = skip_penalties[level] + like_weight * liked

so a skip is always negative unless the user explicitly liked the song, and the
immediate skip is the most negative (``skip_penalties`` must be increasing and < 0).
The simulator writes this reward into the log (``reward`` column); offline conversion
recomputes it from the logged response with any other ``RewardConfig`` so a different
lambda does not need a new simulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Skip levels, in the order of the MSSD flags (skip_1, skip_2, skip_3, not_skipped).
SKIP_LEVEL_NAMES: tuple[str, ...] = ("skip_1", "skip_2", "skip_3", "not_skipped")
IMMEDIATE_SKIP, EARLY_SKIP, LATE_SKIP, PLAYED_THROUGH = 0, 1, 2, 3


@dataclass(frozen=True)
class RewardConfig:
    """Shape of the session reward. Defaults: lambda = 10 (the blog's example)."""

    like_weight: float = 10.0
    """lambda: reward for an explicit like, added on top of the listen part. >= 0;
    the blog suggests 10 or 100."""
    skip_penalties: tuple[float, float, float] = field(default=(-1.0, -0.5, -0.2))
    """Reward of an immediate, early and late skip (skip levels 0, 1, 2), each < 0 and
    increasing, so the immediate skip is the most negative."""

    def __post_init__(self) -> None:
        if not np.isfinite(self.like_weight) or self.like_weight < 0:
            raise ValueError(f"like_weight must be finite and >= 0, got {self.like_weight}")
        if len(self.skip_penalties) != 3:
            raise ValueError(
                f"skip_penalties needs 3 values (immediate, early, late), got {self.skip_penalties}"
            )
        if not all(np.isfinite(p) and p < 0 for p in self.skip_penalties):
            raise ValueError(
                f"skip_penalties must all be finite and < 0, got {self.skip_penalties}"
            )
        immediate, early, late = self.skip_penalties
        if not immediate <= early <= late:
            raise ValueError(
                "skip_penalties must be increasing (immediate skip most negative), "
                f"got {self.skip_penalties}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"like_weight": self.like_weight, "skip_penalties": list(self.skip_penalties)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RewardConfig:
        return cls(
            like_weight=float(state["like_weight"]),
            skip_penalties=tuple(float(p) for p in state["skip_penalties"]),  # type: ignore[arg-type]
        )


def compute_reward(
    listen_fraction: np.ndarray,  # (B,) in [0, 1]
    liked: np.ndarray,  # (B,) bool
    skip_level: np.ndarray,  # (B,) int in 0..3
    config: RewardConfig | None = None,
) -> np.ndarray:
    """Vectorised session reward, (B,) float32 (see the module docstring)."""
    config = config or RewardConfig()
    listen_fraction = np.asarray(listen_fraction, np.float32)
    liked = np.asarray(liked, bool)
    skip_level = np.asarray(skip_level, np.int64)
    if np.any((skip_level < 0) | (skip_level > 3)):
        raise ValueError(f"skip_level must be in 0..3, got values {np.unique(skip_level)}")
    # Index 3 (played through) is a placeholder; np.where picks the listen fraction there.
    penalties = np.asarray((*config.skip_penalties, 0.0), np.float32)[skip_level]
    listen_part = np.where(skip_level == PLAYED_THROUGH, listen_fraction, penalties)
    return (listen_part + np.float32(config.like_weight) * liked).astype(np.float32)
