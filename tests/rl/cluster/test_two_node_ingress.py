"""On the fake multi-node cluster (Ray's fake_multinode provider, token auth on), two
Ingress replicas on two different nodes share one real redis-server: a recommendation
answered on one node gets its feedback on the other, both show the same listeners, and the
log holds every acknowledged decision once (rl/cluster/two_node_ingress.py)."""

from __future__ import annotations

import shutil

import pytest

# ~3.5 min on 2 busy cores (a head, two fake nodes, the app): `make test-slow` runs it.
pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="make install installs redis")
def test_two_ingress_replicas_on_two_nodes_share_one_redis(trained_embedding, tmp_path):
    from rl.cluster.two_node_ingress import TwoNodeIngressConfig, run

    embedding_uri = str(tmp_path / "embedding")
    trained_embedding.save(embedding_uri)
    config = TwoNodeIngressConfig(embedding_uri=embedding_uri, users=4, rounds=3)
    lines: list[str] = []
    report = run(config, echo=lines.append)
    assert report.on_two_nodes, report.replicas
    steps = config.users * config.rounds
    # Every recommendation's feedback went to the replica on the other node, both ways.
    assert sorted(report.answered.values()) == sorted(report.feedback_accepted.values())
    assert sum(report.answered.values()) == steps and min(report.answered.values()) > 0
    assert report.duplicates_refused == steps
    assert report.users_consistent == config.users
    assert (report.log_rows, report.log_missing, report.log_duplicates) == (steps, 0, 0)
    assert report.processes_stopped > 0
