"""Generalised advantage estimation over logged listening sessions (numpy core).

Used by the offline PPO learner (ppo_learner.py) on every minibatch with the *current*
critic, and by the plain-torch benchmark loop. A minibatch is a flat run of steps cut from
whole sessions written in order (episodes.py), so a session may be split at a batch edge;
there the recursion is cut and the tail bootstraps from V(s_{t+1}) -- the same truncated
GAE PPO uses on rollout fragments.

    delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lambda * (1 - segment_end_t) * A_{t+1}
    V_target_t = A_t + V(s_t)

Reference: Schulman et al., "High-Dimensional Continuous Control Using Generalized
Advantage Estimation" (2016).
"""

from __future__ import annotations

import numpy as np


def segment_ends(
    session_step: np.ndarray,  # (B,) step index t of each row within its session
    terminateds: np.ndarray,  # (B,) bool, True at a session's last step
    chain_steps: bool = True,
) -> np.ndarray:
    """(B,) bool: True where the GAE recursion must stop after this row.

    A row continues into the next one only if the next row is the next step of the same
    session (its ``session_step`` is one more and this row is not terminal). With
    ``chain_steps=False`` every row is its own segment (row-per-step data, whose rows may
    be shuffled, gives one-step TD advantages).
    """
    session_step = np.asarray(session_step)
    ends = np.asarray(terminateds, bool).copy()
    if len(ends) == 0:
        return ends
    if not chain_steps:
        return np.ones_like(ends)
    continues = session_step[1:] == session_step[:-1] + 1
    ends[:-1] |= ~continues
    ends[-1] = True
    return ends


def generalized_advantages(
    rewards: np.ndarray,  # (B,)
    values: np.ndarray,  # (B,) V(s_t)
    next_values: np.ndarray,  # (B,) V(s_{t+1}); ignored where terminated
    terminateds: np.ndarray,  # (B,) bool
    ends: np.ndarray,  # (B,) bool, from segment_ends
    gamma: float,
    lambda_: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (advantages (B,), value_targets (B,)) as float32."""
    rewards = np.asarray(rewards, np.float64)
    values = np.asarray(values, np.float64)
    not_terminal = 1.0 - np.asarray(terminateds, np.float64)
    deltas = rewards + gamma * not_terminal * np.asarray(next_values, np.float64) - values
    carry_on = gamma * lambda_ * (1.0 - np.asarray(ends, np.float64))
    advantages = np.empty_like(deltas)
    running = 0.0
    # Backward recursion; a plain loop over a minibatch (~thousands of rows) costs about
    # a millisecond, well below the forward/backward pass it feeds.
    for t in range(len(deltas) - 1, -1, -1):
        running = deltas[t] + carry_on[t] * running
        advantages[t] = running
    return advantages.astype(np.float32), (advantages + values).astype(np.float32)
