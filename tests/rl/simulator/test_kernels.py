"""The compiled library kernels (rl/simulator/kernels.py) against naive Python references,
on a state with full, partly full and empty libraries, pinned slots and today's streams."""

import numpy as np
import pytest

from rl.simulator import SimulatorConfig
from rl.simulator.user import (
    _decay_table,
    initial_state,
    library_slots,
    organic_returns,
    record_streams,
    relationship_and_slots,
)
from tests.rl.simulator.worlds import LAYOUT, small_corpus

BETAS = np.asarray(LAYOUT.betas, np.float32)
DAY = 30


@pytest.fixture()
def world():
    """(corpus, config, state): 40 users whose libraries hold 0..L songs with random states."""
    corpus = small_corpus(n_songs=300, seed=3)
    config = SimulatorConfig(library_size=12)
    rng = np.random.default_rng(5)
    state = initial_state(40, corpus, config, LAYOUT.betas, rng)
    for user in range(40):
        known = rng.integers(0, 13)  # some libraries are full, some empty
        state.library_item[user, :known] = rng.choice(len(corpus), known, replace=False)
    held = state.library_item >= 0
    state.library_state[:] = (
        rng.random(state.library_state.shape).astype(np.float32) * held[..., None]
    )
    state.library_state_day[:] = rng.integers(0, DAY, state.library_state_day.shape)
    state.library_today[:] = held & (rng.random(held.shape) < 0.2)
    state.library_pinned[:] = held & (rng.random(held.shape) < 0.1)
    state.library_minutes[:] = rng.random(held.shape).astype(np.float32) * held
    return corpus, config, state


def naive_slot(state, user, item):
    for slot, held in enumerate(state.library_item[user]):
        if item >= 0 and held == item:
            return slot
    return -1


def naive_relationship(state, user, slot, day):
    idle = (day - 1) - state.library_state_day[user, slot]
    return state.library_state[user, slot] * BETAS**idle


def candidates_of(state, corpus, rng, users):
    """(B, 4) items: half known to the user, half random, some -1 padding."""
    items = rng.integers(0, len(corpus), (len(users), 4))
    for row, user in enumerate(users):
        known = state.library_item[user][state.library_item[user] >= 0]
        if len(known):
            items[row, :2] = rng.choice(known, 2)
    items[rng.random(items.shape) < 0.1] = -1
    return items


def test_library_slots_and_relationships_match_naive_loops(world):
    corpus, _, state = world
    rng = np.random.default_rng(6)
    users = rng.permutation(40)
    items = candidates_of(state, corpus, rng, users)
    slots = library_slots(state, users, items)
    states, slots_again = relationship_and_slots(state, users, items, DAY, BETAS)
    np.testing.assert_array_equal(slots, slots_again)
    for row, user in enumerate(users):
        for j, item in enumerate(items[row]):
            slot = naive_slot(state, user, item)
            assert slots[row, j] == slot
            expected = np.zeros(4) if slot < 0 else naive_relationship(state, user, slot, DAY)
            np.testing.assert_allclose(states[row, j], expected, rtol=1e-5, atol=1e-7)


def test_record_streams_matches_naive_eviction(world):
    corpus, _, state = world
    rng = np.random.default_rng(7)
    users = rng.permutation(40)
    items = candidates_of(state, corpus, rng, users)[:, 1]  # known or new songs
    items = np.where(items >= 0, items, 0)
    streamed = rng.random(40) < 0.8
    minutes = rng.uniform(0.5, 4.0, 40).astype(np.float32)
    before = {name: np.copy(getattr(state, name)) for name in vars(state)}
    record_streams(state, corpus, users, items, streamed, minutes, DAY, BETAS)
    for row, user in enumerate(users):
        if not streamed[row]:
            np.testing.assert_array_equal(state.library_item[user], before["library_item"][user])
            continue
        slot = naive_slot(_View(before), user, items[row])
        if slot < 0:
            free = [s for s, held in enumerate(before["library_item"][user]) if held < 0]
            if free:
                slot = free[0]
            else:  # the weakest long memory, today's streams last, pinned never
                memory = [
                    np.inf
                    if before["library_pinned"][user, s]
                    else float(naive_relationship(_View(before), user, s, DAY)[-1])
                    + 1e6 * before["library_today"][user, s]
                    for s in range(len(before["library_item"][user]))
                ]
                slot = int(np.argmin(memory))
            assert state.library_first_day[user, slot] == DAY
            assert state.library_state_day[user, slot] == DAY - 1
            assert not state.library_state[user, slot].any()
            previous_minutes = 0.0
        else:
            previous_minutes = before["library_minutes"][user, slot]
        assert state.library_item[user, slot] == items[row]
        assert state.library_today[user, slot]
        assert state.library_minutes[user, slot] == pytest.approx(previous_minutes + minutes[row])
        np.testing.assert_allclose(
            state.today_latent_sum[user] - before["today_latent_sum"][user],
            corpus.latents[items[row]],
            rtol=1e-6,
        )
        assert state.today_streams[user] == before["today_streams"][user] + 1


class _View:
    """A UserState-like view of copied arrays (the state before a call)."""

    def __init__(self, arrays):
        self.__dict__.update(arrays)


def test_organic_returns_draw_from_naive_logits(world):
    corpus, config, state = world
    users = np.arange(0, 40, 2)
    # Reference: the numpy formulation over the flat (user, slot) pairs, in nonzero order.
    rows, slots = np.nonzero(state.library_item[users] >= 0)
    user_rows = users[rows]
    songs = state.library_item[user_rows, slots]
    idle = (DAY - 1) - state.library_state_day[user_rows, slots]
    habit = (
        state.library_state[user_rows, slots] * _decay_table(BETAS, DAY + 1)[idle]
    ) @ np.asarray(config.habit_weights, np.float32)
    distance2 = ((state.taste[user_rows] - corpus.latents[songs]) ** 2).sum(
        -1
    ) / corpus.latent_scale**2
    logit = (
        corpus.stickiness[songs]
        + state.organic_bias[user_rows]
        + habit
        - config.organic_taste_weight * distance2
    )
    draws = np.random.default_rng(9).random(len(user_rows))
    expected = draws < 1.0 / (1.0 + np.exp(-logit))
    organic = organic_returns(state, corpus, config, users, DAY, BETAS, np.random.default_rng(9))
    np.testing.assert_array_equal(organic.users, user_rows[expected])
    np.testing.assert_array_equal(organic.items, songs[expected])
