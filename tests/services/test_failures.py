"""Failures under load: ``kill -9`` of an Ingress replica, then of a Scorer replica, while
closed-loop clients send recommendations and feedback (services/failure_drill.py).

Two Ingress and two Scorer replicas on one real redis-server. Each kill must leave: error
rate under 1%, every acknowledged feedback in the parquet log exactly once, every
listener's state counting its acknowledged listens, and the deployment back to full
strength (the recovery time is printed; the benchmark reports it too).
"""

from __future__ import annotations

import time

import pytest

# ~4 min on 2 busy cores (four replicas start, two 15 s load runs): `make test-slow`.
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def resilient_app(small_embedding_uri, redis_url, tmp_path_factory):
    from rl.songs.embedding import load_song_embedding
    from services.app import start_app
    from services.failure_drill import Addresses
    from tests.services.conftest import app_config, free_port, serve_on_local_ray

    work = tmp_path_factory.mktemp("failures")
    config = app_config(
        work, small_embedding_uri, user_store=redis_url, user_store_namespace="failures",
        ingress_min_replicas=2, ingress_max_replicas=2, scorer_min_replicas=2,
    )  # fmt: skip
    with serve_on_local_ray(fast_path=True):
        start_app(config, http_port=free_port(), grpc_port=free_port())
        deadline = time.monotonic() + 120
        while len(Addresses.read()) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        tracks = [str(t) for t in load_song_embedding(small_embedding_uri).track_ids[:500]]
        yield {"config": config, "tracks": tracks}


@pytest.mark.parametrize("victim", ["Ingress", "Scorer"])
def test_a_killed_replica_loses_no_acknowledged_feedback(resilient_app, victim):
    from services.failure_drill import check_durability, kill_under_load

    outcome = kill_under_load(resilient_app["tracks"], victim, seconds=15.0, kill_after_s=4.0)
    durability = check_durability(outcome, resilient_app["config"]["log_uri"])
    print(
        f"\nkill -9 {victim}: {outcome['requests']} requests, {outcome['errors']} errors "
        f"({outcome['error_rate']:.2%}), recovery {outcome.get('recovery_s')} s, longest gap "
        f"{outcome['max_gap_s']} s; {durability}"
    )
    assert "killed_at_s" in outcome, outcome.get("kill")
    assert outcome["requests"] > 100
    assert outcome["error_rate"] < 0.01, outcome["first_errors"]
    assert durability["lost"] == 0 and durability["duplicated"] == 0
    assert durability["users_missing_listens"] == []
    assert outcome.get("recovery_s") is not None  # back to full strength within 120 s
