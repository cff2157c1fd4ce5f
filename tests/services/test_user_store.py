"""One conformance suite for every ``UserStore``: the in-process store and Redis (a real
redis-server started by the ``redis_url`` fixture; no mock).

Each test gets a fresh store (Redis: its own key namespace). Concurrency is exercised the
way two ingress replicas would: two store objects (two Redis clients) on one server.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from rl.decision.observation import ObservationLayout
from services.core.memory_user_store import InProcessUserStore
from services.core.user_state import PendingDecision, UserStore

LAYOUT = ObservationLayout(k=3, latent_dim=2, betas=(0.5, 0.9))
KINDS = ["memory", "redis"]


@pytest.fixture(params=KINDS)
def make_store(request):
    """() -> a store of the parametrised kind; every call on Redis shares one namespace, as
    replicas of one app do."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    made: list[UserStore] = []
    memory: list[InProcessUserStore] = []

    def make(taste_rate: float = 0.1) -> UserStore:
        if request.param == "memory":
            if not memory:  # one process's memory: every "replica" is the same store
                memory.append(InProcessUserStore(LAYOUT, np.zeros(2), taste_rate=taste_rate))
            return memory[0]
        from services.core.redis_user_store import RedisUserStore

        url = request.getfixturevalue("redis_url")
        store = RedisUserStore(LAYOUT, np.zeros(2), url, taste_rate=taste_rate, namespace=namespace)
        made.append(store)
        return store

    yield make
    # Each test runs its own event loop (asyncio.run): Redis clients are closed in it.


def run(coroutine):
    return asyncio.run(coroutine)


def decision(request_id: str, user_id: str = "u", chosen: int = 1) -> PendingDecision:
    return PendingDecision(
        request_id=request_id, user_id=user_id, session_id="s", position=0, timestamp=86_400 * 5,
        current_track_id="now", candidate_track_ids=["a", "b", "c"],
        candidate_latents=np.arange(6, dtype=np.float32).reshape(3, 2),
        candidate_relationship=np.full((3, 2), 0.25, np.float32),
        user_taste=np.array([0.5, -0.5], np.float32), chosen_index=chosen,
        behaviour_logp=-1.25, policy_version="v0001", arm="production",
    )  # fmt: skip


def naive_states(listen_days: set[int], until_day: int, betas) -> np.ndarray:
    """Reference: the paper's daily EMA applied one day at a time from day 0."""
    state = np.zeros(len(betas))
    for day in range(until_day):
        state = np.asarray(betas) * state + (1 - np.asarray(betas)) * (day in listen_days)
    return state


def test_an_unseen_user_is_unknown_until_a_decision_and_starts_from_the_default_taste(
    make_store,
):
    async def scenario():
        store = make_store()
        assert await store.user("new") is None
        context = await store.decision_context(["new"], ["s"], [["a", "b"]], day=3)
        np.testing.assert_array_equal(context.tastes, [[0.0, 0.0]])
        np.testing.assert_array_equal(context.relationships[0], np.zeros((2, 2)))
        assert context.positions == [0]
        assert (await store.user("new")) is not None
        await store.close()

    run(scenario())


def test_relationship_state_matches_the_daily_ema(make_store):
    async def scenario():
        store = make_store()
        listen_days = [0, 0, 3, 4, 9]  # two listens on day 0 count once
        for day in range(31):
            expected = naive_states({d for d in listen_days if d < day}, day, LAYOUT.betas)
            context = await store.decision_context(["u"], ["s"], [["song", "other"]], day)
            got = context.relationships[0]
            np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-7)
            np.testing.assert_array_equal(got[1], 0.0)
            for _ in range(listen_days.count(day)):
                await store.record_listen("u", "song", np.ones(2), day)
        await store.close()

    run(scenario())


def test_taste_moves_toward_listened_songs(make_store):
    async def scenario():
        store = make_store(taste_rate=0.5)
        await store.record_listen("a", "s", np.array([2.0, 0.0]), day=1)
        await store.record_listen("a", "t", None, day=1)  # a song without a latent
        state = await store.user("a")
        np.testing.assert_allclose(state.taste, [1.0, 0.0])
        assert state.listens == 2 and set(state.relationships) == {"s", "t"}
        await store.close()

    run(scenario())


def test_positions_are_taken_once_even_from_two_replicas(make_store):
    async def scenario():
        first, second = make_store(), make_store()
        calls = [
            store.decision_context(["u"], ["s"], [["a"]], day=1) for store in [first, second] * 10
        ]
        contexts = await asyncio.gather(*calls)
        assert sorted(c.positions[0] for c in contexts) == list(range(20))
        other = await first.decision_context(["u"], ["s2"], [["a"]], day=1)
        assert other.positions == [0]
        assert (await second.user("u")).positions == {"s": 20, "s2": 1}
        await first.close()
        await second.close()

    run(scenario())


def test_a_pending_decision_is_claimed_exactly_once(make_store):
    async def scenario():
        first, second = make_store(), make_store()
        await first.remember([decision("r1"), decision("r2", user_id="v")])
        claims = await asyncio.gather(*[s.claim("r1") for s in [first, second] * 4])
        won = [c for c in claims if c is not None]
        assert len(won) == 1
        got, want = won[0], decision("r1")
        for name in ("candidate_latents", "candidate_relationship", "user_taste"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        assert (got.request_id, got.chosen_index, got.behaviour_logp, got.arm) == (
            "r1",
            1,
            -1.25,
            "production",
        )
        assert await second.claim("r1") is None
        await second.give_back(got)  # a journal write failed: the feedback may be retried
        assert (await first.claim("r1")) is not None
        assert await first.claim("never-issued") is None
        recent = (await second.user("v")).recent
        assert [r["request_id"] for r in recent] == ["r2"] and recent[0]["chosen_track_id"] == "b"
        await first.close()
        await second.close()

    run(scenario())


def test_concurrent_listens_of_one_user_are_all_applied(make_store):
    """Atomic per user: 2 replicas x 15 listens of different songs at once lose none."""

    async def scenario():
        first, second = make_store(taste_rate=0.1), make_store(taste_rate=0.1)
        latent = np.array([1.0, 1.0])
        listens = [
            store.record_listen("fan", f"song-{i}", latent, day=7)
            for i, store in enumerate([first, second] * 15)
        ]
        await asyncio.gather(*listens)
        state = await first.user("fan")
        assert state.listens == 30 and len(state.relationships) == 30
        # 30 EMA steps toward (1, 1) from (0, 0), in whatever order: 1 - 0.9^30.
        np.testing.assert_allclose(state.taste, np.full(2, 1 - 0.9**30), rtol=1e-5)
        await first.close()
        await second.close()

    run(scenario())


def test_load_replaces_users_and_records_its_source(make_store):
    async def scenario():
        store = make_store()
        await store.record_listen("old", "x", np.ones(2), day=2)
        source = InProcessUserStore(LAYOUT, np.zeros(2))
        await source.record_listen("old", "y", np.array([4.0, 0.0]), day=3)
        await source.decision_context(["old"], ["s"], [["y"]], day=3)
        await source.remember([decision("r9", user_id="old")])
        assert await store.built_from() is None
        copied = await source.user("old")
        assert await store.load([("old", copied)], source="file:///log") == 1
        assert await store.built_from() == "file:///log"
        state = await store.user("old")
        assert set(state.relationships) == {"y"}  # replaced, not merged
        np.testing.assert_allclose(state.taste, copied.taste)
        assert state.positions == {"s": 1} and [r["request_id"] for r in state.recent] == ["r9"]
        await store.close()

    run(scenario())
