"""Compiled per-step kernels of the simulator's library bookkeeping (numba).

Why compiled: every step of every session looks up each candidate in the user's library
(B lanes x K candidates x L slots), gathers the relationship states of the known ones and
books the picked song. In numpy each of those is a chain of (B, K, L) temporaries and
fancy-indexed gathers, and at 100,000 users they were about half of the simulator's CPU
time. A loop over lanes that stops at the first matching slot touches a few cache lines
per candidate instead. The kernels do exactly what the numpy formulation in user.py's
docstrings says (tests/rl/simulator/test_kernels.py checks them against a naive Python
reference), draw no random numbers, and write the state arrays in place.

``users`` within one call must be distinct where a kernel writes (one decision per lane
per step), as the numpy versions required.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _slot_of(library_item: np.ndarray, user: int, item: int) -> int:
    if item < 0:
        return -1
    row = library_item[user]
    for slot in range(row.shape[0]):
        if row[slot] == item:
            return slot
    return -1


@njit(cache=True, nogil=True)
def library_slots_kernel(
    library_item: np.ndarray,  # (U, L) int32
    users: np.ndarray,  # (B,) int
    items: np.ndarray,  # (B, K) int, -1 padding
) -> np.ndarray:
    """(B, K) int64 library slot of each item, -1 unknown (the first matching slot)."""
    batch, k = items.shape
    slots = np.full((batch, k), -1, np.int64)
    for b in range(batch):
        user = users[b]
        for j in range(k):
            slots[b, j] = _slot_of(library_item, user, items[b, j])
    return slots


@njit(cache=True, nogil=True)
def relationship_and_slots_kernel(
    library_item: np.ndarray,  # (U, L) int32
    library_state: np.ndarray,  # (U, L, R) float32 as of library_state_day's end
    library_state_day: np.ndarray,  # (U, L) int32
    decay: np.ndarray,  # (>= day + 1, R) float32 beta^n
    users: np.ndarray,  # (B,)
    items: np.ndarray,  # (B, K), -1 padding
    day: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(B, K, R) float32 relationship states during ``day`` (0 for unknown songs) and the
    (B, K) slots: s * beta^((day - 1) - state_day), as ``relationship_now``."""
    batch, k = items.shape
    n_betas = library_state.shape[2]
    states = np.zeros((batch, k, n_betas), np.float32)
    slots = np.full((batch, k), -1, np.int64)
    for b in range(batch):
        user = users[b]
        for j in range(k):
            slot = _slot_of(library_item, user, items[b, j])
            slots[b, j] = slot
            if slot >= 0:
                idle = (day - 1) - library_state_day[user, slot]
                for r in range(n_betas):
                    states[b, j, r] = library_state[user, slot, r] * decay[idle, r]
    return states, slots


@njit(cache=True, nogil=True)
def record_streams_kernel(
    library_item: np.ndarray,  # (U, L) int32
    library_state: np.ndarray,  # (U, L, R) float32
    library_state_day: np.ndarray,  # (U, L) int32
    library_first_day: np.ndarray,  # (U, L) int32
    library_days_active: np.ndarray,  # (U, L) int32
    library_minutes: np.ndarray,  # (U, L) float32
    library_today: np.ndarray,  # (U, L) bool
    library_pinned: np.ndarray,  # (U, L) bool
    today_latent_sum: np.ndarray,  # (U, D) float32
    today_streams: np.ndarray,  # (U,) int32
    latents: np.ndarray,  # (N, D) float32
    last_decay: np.ndarray,  # (>= day + 1,) float32 beta_last^n
    users: np.ndarray,  # (B,) distinct
    items: np.ndarray,  # (B,)
    streamed: np.ndarray,  # (B,) bool
    minutes: np.ndarray,  # (B,) float32
    known_slots: np.ndarray,  # (B,) slots found this step (-1 new); empty = search
    day: int,
) -> None:
    """Book the streams (see ``user.record_streams``): a new song takes the first free
    slot, else the slot with the weakest long memory (last beta's state decayed to
    today), a slot streamed today only when every slot was (+1e6), never a pinned one."""
    search = known_slots.shape[0] == 0
    n_slots = library_item.shape[1]
    dim = latents.shape[1]
    for b in range(users.shape[0]):
        if not streamed[b]:
            continue
        user, item = users[b], items[b]
        slot = _slot_of(library_item, user, item) if search else known_slots[b]
        if slot < 0:
            for candidate in range(n_slots):
                if library_item[user, candidate] < 0:
                    slot = candidate
                    break
            if slot < 0:
                weakest = np.inf
                slot = 0  # every slot pinned: slot 0 (the numpy argmin of all-inf)
                for candidate in range(n_slots):
                    if library_pinned[user, candidate]:
                        continue
                    idle = (day - 1) - library_state_day[user, candidate]
                    memory = np.float64(library_state[user, candidate, -1] * last_decay[idle])
                    if library_today[user, candidate]:
                        memory += 1e6
                    if memory < weakest:
                        weakest, slot = memory, candidate
            library_item[user, slot] = item
            library_state[user, slot, :] = 0.0
            library_state_day[user, slot] = day - 1
            library_first_day[user, slot] = day
            library_days_active[user, slot] = 0
            library_minutes[user, slot] = 0.0
        library_today[user, slot] = True
        library_minutes[user, slot] += minutes[b]
        for d in range(dim):
            today_latent_sum[user, d] += latents[item, d]
        today_streams[user] += 1


@njit(cache=True, nogil=True)
def organic_logits_kernel(
    library_item: np.ndarray,  # (U, L) int32
    library_state: np.ndarray,  # (U, L, R) float32
    library_state_day: np.ndarray,  # (U, L) int32
    decay: np.ndarray,  # (>= day + 1, R) float32
    taste: np.ndarray,  # (U, D) float32
    organic_bias: np.ndarray,  # (U,) float32
    latents: np.ndarray,  # (N, D) float32
    stickiness: np.ndarray,  # (N,) float32
    habit_weights: np.ndarray,  # (R,) float32
    users: np.ndarray,  # (A,)
    day: int,
    inverse_scale2: float,
    taste_weight: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every known (user, slot) pair of ``users`` in row-major order (as np.nonzero) and its
    organic-return logit: stickiness + user bias + relationship now . habit weights -
    taste_weight x squared taste distance / scale^2. Returns (user rows, slots, songs,
    logits)."""
    n_slots = library_item.shape[1]
    n_betas = library_state.shape[2]
    dim = latents.shape[1]
    total = 0
    for a in range(users.shape[0]):
        for slot in range(n_slots):
            if library_item[users[a], slot] >= 0:
                total += 1
    user_rows = np.empty(total, np.int64)
    slots = np.empty(total, np.int64)
    songs = np.empty(total, np.int32)
    logits = np.empty(total, np.float32)
    at = 0
    for a in range(users.shape[0]):
        user = users[a]
        for slot in range(n_slots):
            song = library_item[user, slot]
            if song < 0:
                continue
            idle = (day - 1) - library_state_day[user, slot]
            habit = np.float32(0.0)
            for r in range(n_betas):
                habit += library_state[user, slot, r] * decay[idle, r] * habit_weights[r]
            distance2 = np.float32(0.0)
            for d in range(dim):
                diff = taste[user, d] - latents[song, d]
                distance2 += diff * diff
            user_rows[at], slots[at], songs[at] = user, slot, song
            logits[at] = (
                stickiness[song]
                + organic_bias[user]
                + habit
                - taste_weight * (distance2 * inverse_scale2)
            )
            at += 1
    return user_rows, slots, songs, logits


@njit(cache=True, nogil=True)
def retrieve_candidates_kernel(
    neighbours: np.ndarray,  # (N, W) int32 neighbour table, -1 padding
    current: np.ndarray,  # (B,) song rows
    history: np.ndarray,  # (B, H) songs played in the session, -1 padding
    k: int,
) -> np.ndarray:
    """(B, k) int64: the first k neighbours of each current song that are not in the
    session's history, nearest first, -1 padding (``recommender.retrieve_candidates``)."""
    batch = current.shape[0]
    width, depth = neighbours.shape[1], history.shape[1]
    rows = np.full((batch, k), -1, np.int64)
    for b in range(batch):
        filled = 0
        for w in range(width):
            song = neighbours[current[b], w]
            if song < 0:
                continue
            played = False
            for h in range(depth):
                if history[b, h] == song:
                    played = True
                    break
            if not played:
                rows[b, filled] = song
                filled += 1
                if filled == k:
                    break
    return rows
