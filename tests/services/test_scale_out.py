"""Two Ingress replicas on one Redis: a recommendation answered by one replica gets its
feedback through the other, and both see the same listeners.

Real Serve with direct ingress (each Ingress replica listens on its own port), a real
redis-server (the ``redis_url`` fixture) and the parquet log under a tmp dir.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ray

N_USERS = 4
ROUNDS = 3


@pytest.fixture(scope="module")
def two_replicas(small_embedding_uri, redis_url, tmp_path_factory):
    import httpx

    from rl.songs.embedding import load_song_embedding
    from services.app import direct_ingress_urls, start_app
    from tests.services.conftest import free_port, serve_on_local_ray

    work = tmp_path_factory.mktemp("scale-out")
    config = {
        "embedding_uri": small_embedding_uri,
        "registry_uri": str(work / "registry"),
        "log_uri": str(work / "log"),
        "journal_dir": str(work / "journal"),  # shared by both replicas (one machine)
        "flush_interval_s": 0.5,
        "seed": 0,
        "user_store": redis_url,
        "user_store_namespace": "scale-out",
        "ingress_min_replicas": 2,
        "ingress_max_replicas": 2,
    }
    with serve_on_local_ray(fast_path=True):
        start_app(config, http_port=free_port(), grpc_port=free_port())
        deadline = time.monotonic() + 120
        urls = direct_ingress_urls()["http"]
        while len(urls) < 2 and time.monotonic() < deadline:
            time.sleep(1)
            urls = direct_ingress_urls()["http"]
        assert len(set(urls)) == 2, urls  # one port per replica
        embedding = load_song_embedding(small_embedding_uri)
        with (
            httpx.Client(base_url=urls[0], timeout=30) as a,
            httpx.Client(base_url=urls[1], timeout=30) as b,
        ):
            yield {"a": a, "b": b, "config": config, "embedding": embedding}


def test_feedback_through_the_other_replica_updates_the_shared_state(two_replicas):
    from rl.feedback.log import read_decisions_table

    a, b, embedding = two_replicas["a"], two_replicas["b"], two_replicas["embedding"]
    tracks = [str(t) for t in embedding.track_ids[:50]]
    row_of = {t: i for i, t in enumerate(embedding.track_ids)}
    default_taste = embedding.latents.mean(axis=0)
    expected_taste = {f"scaled-{u}": default_taste.astype(np.float64) for u in range(N_USERS)}
    sent: dict[str, dict] = {}
    for step in range(ROUNDS * N_USERS):
        user = f"scaled-{step % N_USERS}"
        here, there = (a, b) if step % 2 == 0 else (b, a)
        answer = here.post("/v1/recommend", json={"user_id": user, "track_id": tracks[step]})
        assert answer.status_code == 200, answer.text
        decision = answer.json()
        ack = there.post(
            "/v1/feedback",
            json={"request_id": decision["request_id"], "track_id": decision["chosen_track_id"],
                  "listen_fraction": 1.0, "liked": True, "skip_level": 3},
        )  # fmt: skip
        assert ack.status_code == 200, ack.text
        assert ack.json()["listened"]
        # Once accepted, the decision is gone for both replicas.
        again = here.post(
            "/v1/feedback",
            json={"request_id": decision["request_id"], "track_id": decision["chosen_track_id"],
                  "listen_fraction": 1.0, "skip_level": 3},
        )  # fmt: skip
        assert again.status_code == 404
        latent = embedding.latents[row_of[decision["chosen_track_id"]]]
        expected_taste[user] = 0.9 * expected_taste[user] + 0.1 * latent
        sent[decision["request_id"]] = decision

    for user, taste in expected_taste.items():
        views = [replica.get(f"/v1/users/{user}").json() for replica in (a, b)]
        assert views[0] == views[1]  # both replicas read the one store
        assert views[0]["listens"] == ROUNDS
        np.testing.assert_allclose(views[0]["taste"], taste, rtol=1e-4, atol=1e-5)
        assert len(views[0]["recent_decisions"]) == ROUNDS

    # Every acknowledged row reaches the log exactly once (each replica flushes its own).
    log_uri = two_replicas["config"]["log_uri"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ids = read_decisions_table(log_uri)["request_id"].to_pylist()
        if len(ids) >= len(sent):
            break
        time.sleep(0.5)
    assert sorted(ids) == sorted(sent)
    # The logged taste of a user's later decision carries the listens answered elsewhere.
    rows = read_decisions_table(log_uri).to_pandas().set_index("request_id")
    first_user = [r for r, d in sent.items() if d["user_id"] == "scaled-0"]
    tastes = [tuple(np.round(rows.loc[r, "user_taste"], 6)) for r in first_user]
    assert len(set(tastes)) == ROUNDS
