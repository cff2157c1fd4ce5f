"""The in-process store's own bounds and the pure helpers (the store interface itself:
test_user_store.py, run against every store)."""

import asyncio

import numpy as np
import pytest

from rl.decision.observation import ObservationLayout
from services.core.memory_user_store import InProcessUserStore
from services.core.user_state import (
    build_observations,
    day_of,
    listened_from,
)

LAYOUT = ObservationLayout(k=3, latent_dim=2, betas=(0.5, 0.9))


def test_the_in_process_store_is_bounded():
    store = InProcessUserStore(LAYOUT, default_taste=np.zeros(2), max_users=2, max_pending=1)

    async def scenario():
        await store.record_listen("a", "s", np.array([2.0, 0.0]), day=1)
        await store.decision_context(["b", "c"], ["s", "s"], [["x"], ["x"]], day=1)
        assert await store.user("a") is None  # "a" was least recently seen
        assert (await store.stats())["users"] == 2

    asyncio.run(scenario())


def test_observations_pad_missing_candidates_with_mask_zero():
    obs = build_observations(
        LAYOUT, np.ones((2, 2)), np.zeros((2, 2)), np.array([3, 23]), np.array([0, 6]),
        [np.ones((3, 2)), np.full((1, 2), 7.0)], [np.zeros((3, 2)), np.full((1, 2), 0.5)],
    )  # fmt: skip
    parts = LAYOUT.split(obs)
    np.testing.assert_array_equal(parts["candidate_mask"], [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(parts["candidate_latents"][1, 0], [7.0, 7.0])
    np.testing.assert_array_equal(parts["candidate_relationship"][1, 1:], 0.0)


def test_listened_rule_and_days():
    assert listened_from(0.2, duration_s=200.0, skip_level=1)  # 40 s
    assert not listened_from(0.1, duration_s=200.0, skip_level=0)  # 20 s
    assert listened_from(0.6, duration_s=None, skip_level=0)
    assert day_of(86_400 * 3 + 5) == 3


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="taste_rate must be in"):
        InProcessUserStore(LAYOUT, np.zeros(2), taste_rate=0.0)
    with pytest.raises(ValueError, match="max_pending must be >= 1"):
        InProcessUserStore(LAYOUT, np.zeros(2), max_pending=0)
