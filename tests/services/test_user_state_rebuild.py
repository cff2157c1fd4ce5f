"""The user state is a view of the log: rebuilt from it, it equals what live feedback built.

Live: the request pipeline (in-process store) answers recommendations and feedback for a
few listeners over several days. Rebuilt: ``rebuild_store`` folds the parquet log the
feedback landed in, in-process (pyarrow) and through ``encore user-state rebuild`` with Ray
Data into a real Redis. Every listener's taste, listens, relationship entries, session
positions and recent decisions must match.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from services.core.memory_user_store import InProcessUserStore
from services.core.user_state import UserState
from services.schemas import FeedbackRequest, RecommendRequest
from services.user_state_rebuild import rebuild_store
from tests.services.test_request_pipeline import make_pipeline

USERS = ["ann", "bob", "cid"]


@pytest.fixture(scope="module")
def songs(small_embedding_uri):
    from services.assembly import load_served_songs
    from services.config import ServiceConfig

    return load_served_songs(ServiceConfig(embedding_uri=small_embedding_uri, registry_uri=""))


@pytest.fixture(scope="module")
def lived(songs, small_embedding_uri, tmp_path_factory):
    """The live pipeline's store after 45 decisions over 4 days, and the log's URI."""
    work = tmp_path_factory.mktemp("lived")
    pipeline, _ = make_pipeline(songs, small_embedding_uri, work)
    now = [86_400.0 * 20_000 + 3_600]
    pipeline.clock = lambda: now[0]
    rng = np.random.default_rng(3)
    tracks = [str(t) for t in songs[0].track_ids[:40]]

    async def live() -> None:
        for step in range(45):
            now[0] += 7_200  # two hours a decision: 45 decisions span 4 days
            user = USERS[step % 3]
            body = {"user_id": user, "track_id": tracks[rng.integers(len(tracks))]}
            if step % 5 == 0:
                body["session_id"] = f"{user}-radio"
            request = RecommendRequest.model_validate(body)
            (answer,) = await pipeline.recommend_batch([request])
            if step % 7 == 6:
                continue  # no feedback: the decision is not in the log
            fraction = float(rng.choice([0.05, 0.5, 1.0]))
            await pipeline.feedback(
                FeedbackRequest(
                    request_id=answer.request_id,
                    track_id=answer.chosen_track_id,
                    listen_fraction=fraction,
                    skip_level=3 if fraction == 1.0 else 1,
                )
            )

    asyncio.run(live())
    pipeline.sink.close()
    return pipeline.store, str(work / "log")


def assert_same_state(got: UserState, want: UserState, logged: set[str]) -> None:
    """``logged``: request ids in the log (decisions without feedback are not there, so
    they are not in the rebuilt recent decisions)."""
    np.testing.assert_allclose(got.taste, want.taste, rtol=1e-5, atol=1e-6)
    assert got.listens == want.listens
    assert sorted(got.relationships) == sorted(want.relationships)
    for track, entry in want.relationships.items():
        other = got.relationships[track]
        assert (other.day, other.listened_today) == (entry.day, entry.listened_today), track
        np.testing.assert_allclose(other.state, entry.state, rtol=1e-5, atol=1e-7)
    answered = [r["request_id"] for r in want.recent if r["request_id"] in logged]
    assert [r["request_id"] for r in got.recent] == answered
    assert set(got.positions) <= set(want.positions)
    for session, position in got.positions.items():
        assert position <= want.positions[session]


def logged_ids(log_uri: str) -> set[str]:
    from rl.feedback.log import read_decisions_table

    return set(read_decisions_table(log_uri)["request_id"].to_pylist())


def live_states(store) -> dict[str, UserState]:
    return {u: asyncio.run(store.user(u)) for u in USERS}


def test_the_in_process_rebuild_equals_the_live_state(lived, songs):
    live_store, log_uri = lived
    embedding = songs[0]
    rebuilt = InProcessUserStore(live_store.layout, live_store.default_taste)
    report = asyncio.run(rebuild_store(rebuilt, log_uri, embedding, engine="pyarrow"))
    assert report["users"] == len(USERS)
    live = live_states(live_store)
    assert any(state.listens > 0 for state in live.values())
    logged = logged_ids(log_uri)
    for user in USERS:
        assert_same_state(asyncio.run(rebuilt.user(user)), live[user], logged)


@pytest.mark.ray
@pytest.mark.slow  # ~80 s on 2 cores: Ray's start and a Ray Data groupby
def test_encore_user_state_rebuild_with_ray_data_into_redis(
    lived, songs, redis_url, small_embedding_uri
):
    from rl.cli import main
    from services.core.redis_user_store import RedisUserStore

    live_store, log_uri = lived
    namespace = f"rebuild-{uuid.uuid4().hex[:6]}"
    code = main(
        ["user-state", "rebuild", "--log", log_uri, "--store", redis_url, "--namespace", namespace,
         "--embedding", small_embedding_uri, "--engine", "ray", "--num-cpus", "2"]
    )  # fmt: skip
    assert code == 0
    live = live_states(live_store)

    async def read() -> dict[str, UserState]:
        store = RedisUserStore(
            live_store.layout, live_store.default_taste, redis_url, namespace=namespace
        )
        try:
            assert await store.built_from() == log_uri
            return {u: await store.user(u) for u in USERS}
        finally:
            await store.close()

    logged = logged_ids(log_uri)
    for user, got in asyncio.run(read()).items():
        assert_same_state(got, live[user], logged)
