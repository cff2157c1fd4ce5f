"""Two Ingress replicas on one Redis: a recommendation answered by one replica gets its
feedback through the other, and both see the same listeners. The same app sheds load past
its (here tiny) queue length and exports its metrics on Ray's Prometheus endpoint.

Real Serve with direct ingress (each Ingress replica listens on its own port), a real
redis-server (the ``redis_url`` fixture) and the parquet log under a tmp dir.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

# ~150 s on 2 busy cores (two Ingress replicas start): `make test-slow` runs it.
pytestmark = [pytest.mark.ray, pytest.mark.slow]

N_USERS = 4
ROUNDS = 3
SHED_AT = 4


@pytest.fixture(scope="module")
def two_replicas(small_embedding_uri, redis_url, tmp_path_factory):
    import httpx

    from rl.songs.embedding import load_song_embedding
    from services.app import direct_ingress_urls, start_app
    from tests.services.conftest import app_config, free_port, serve_on_local_ray

    work = tmp_path_factory.mktemp("scale-out")
    # One journal folder, shared by both replicas (one machine).
    config = app_config(
        work, small_embedding_uri, user_store=redis_url, user_store_namespace="scale-out",
        ingress_min_replicas=2, ingress_max_replicas=2, shed_queue_length=SHED_AT,
    )  # fmt: skip
    metrics_port = free_port()
    with serve_on_local_ray(fast_path=True, _metrics_export_port=metrics_port):
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
            yield {
                "a": a, "b": b, "config": config, "embedding": embedding, "urls": urls,
                "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
            }  # fmt: skip


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


def test_past_the_queue_length_recommendations_are_shed_at_once(two_replicas):
    import asyncio

    import httpx

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=two_replicas["urls"][0], timeout=60) as client:
            body = {"user_id": "crowd", "track_id": str(two_replicas["embedding"].track_ids[0])}
            return await asyncio.gather(
                *[client.post("/v1/recommend", json=body) for _ in range(48)]
            )

    answers = asyncio.run(burst())
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= SHED_AT, statuses
    shed = [r for r in answers if r.status_code == 503]
    assert shed, "48 concurrent requests never passed a queue length of 4"
    assert shed[0].headers["retry-after"] == "1"
    assert "overloaded" in shed[0].json()["detail"]


def test_metrics_reach_rays_prometheus_endpoint(two_replicas):
    """Counters per arm and version, the store latency histogram, shed requests and the
    serving version, as Prometheus scrapes them (Ray exports every few seconds)."""
    import httpx

    wanted = [
        "ray_encore_recommendations_total{",
        "ray_encore_feedback_total{",
        "ray_encore_streams_total{",
        "ray_encore_reward_gain_total{",
        "ray_encore_store_latency_ms_bucket{",
        "ray_encore_shed_requests_total{",
        "ray_encore_serving_version{",
    ]
    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        text = httpx.get(two_replicas["metrics"], timeout=10).text
        if all(name in text for name in wanted):
            break
        time.sleep(2)
    missing = [name for name in wanted if name not in text]
    assert not missing, missing
    lines = [line for line in text.splitlines() if line.startswith("ray_encore_feedback_total{")]
    assert any('arm="production"' in line and 'model_version="logging"' in line for line in lines)
    store = [line for line in text.splitlines() if "ray_encore_store_latency_ms_count{" in line]
    assert any('store="redis"' in line and 'op="claim"' in line for line in store)
