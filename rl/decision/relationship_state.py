"""The paper's content-relationship state (the paper's section 3).

For a user and an item, s_{t+1} = beta ⊙ s_t + (1 - beta) · 1{c_t > 0}: one exponential
moving average of "listened to the item on day t" per forgetting factor beta. s = 0 means
the user never listened; long memories (beta = 0.99) separate an old habit from a one-off.
The simulator, the log-derived states and the served Scorer all use this one update.
"""

from __future__ import annotations

import numpy as np


def update_relationship_state(
    state: np.ndarray,  # (..., R)
    listened: np.ndarray,  # (...) bool or counts; > 0 means listened that day
    betas: np.ndarray,  # (R,)
) -> np.ndarray:
    """One day's update of relationship states; returns a new (..., R) float32 array."""
    betas = np.asarray(betas, dtype=np.float32)
    indicator = (np.asarray(listened) > 0).astype(np.float32)[..., None]
    return betas * np.asarray(state, dtype=np.float32) + (1.0 - betas) * indicator


def relationship_after_days(
    state: np.ndarray,  # (..., R)
    idle_days: np.ndarray | int,  # (...) days without a listen
    betas: np.ndarray,  # (R,)
) -> np.ndarray:
    """Closed form of ``idle_days`` updates with no listen: s · beta^n (lazy decay)."""
    betas = np.asarray(betas, dtype=np.float32)
    days = np.asarray(idle_days, dtype=np.float32)[..., None]
    return np.asarray(state, dtype=np.float32) * betas**days
