"""Shards of one population: disjoint user and session ids, each shard its own files, and
the Ray shell running one task per shard into one log."""

import numpy as np
import pyarrow.compute as pc
import pytest

from rl.decision.observation import ObservationLayout
from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy
from rl.feedback.log import read_decisions_table, read_organic_table
from rl.simulator import SimulatorConfig, build_corpus
from rl.simulator.shards import ShardedWorld, shard_sizes, simulate_shard, simulate_sharded

LAYOUT = ObservationLayout(k=4)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((600, 5)).astype(np.float32)
    config = SimulatorConfig()
    corpus = build_corpus(latents, [f"s{i:04d}" for i in range(600)], LAYOUT.k, config, rng)
    policy = MyopicListenPolicy(ListenProbabilityModel(LAYOUT, corpus.latent_scale))
    return corpus, policy, config


def test_shard_sizes_cover_the_population_once():
    assert shard_sizes(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert shard_sizes(3, 5) == [(0, 3)]
    with pytest.raises(ValueError, match="must be >= 1"):
        shard_sizes(0, 5)


def _ids(log_uri):
    table = read_decisions_table(log_uri)
    users = set(table.column("user_id").to_pylist())
    sessions = pc.unique(table.column("session_id")).to_pylist()
    return table, users, sessions


def test_shards_write_disjoint_ids_into_one_log(world, tmp_path):
    corpus, policy, config = world
    log = str(tmp_path / "log")
    results = [
        simulate_shard(shard, first, users, ShardedWorld(3, corpus, policy, LAYOUT, config, log, 7))
        for shard, (first, users) in enumerate(shard_sizes(250, 100))
    ]
    table, users, sessions = _ids(log)
    assert (
        table.num_rows
        == sum(r.summary["decisions"] for r in results)
        == sum(r.written_rows for r in results)
    )
    assert read_organic_table(log).num_rows == sum(r.written_organic_rows for r in results)
    expected = {f"u{user:07d}" for user in range(250)}
    assert users <= expected and len(users) > 100
    for result in results:  # each shard's users are its own range
        mine = {f"u{result.first_user_id + row:07d}" for row in range(result.users)}
        shard_sessions = [s for s in sessions if s.split("-")[0] in mine]
        assert shard_sessions and all(s.split("-")[0] in mine for s in shard_sessions)
    assert len(sessions) == len(set(sessions))
    # Shards have their own seeds: shard 0 and a one-shard run of its users agree.
    alone = simulate_shard(0, 0, 100, ShardedWorld(3, corpus, policy, LAYOUT, config, None, 7))
    assert alone.summary == results[0].summary


@pytest.mark.ray
@pytest.mark.slow  # a Ray start plus three shard tasks: ~1 min on the busy 2 cores
def test_simulate_sharded_runs_one_ray_task_per_shard(world, tmp_path, ray_local):
    corpus, policy, config = world
    log = str(tmp_path / "log")
    seen = []
    results = simulate_sharded(
        300, 100, 2, corpus, policy, LAYOUT, config, log, seed=3, on_shard=seen.append
    )
    assert [r.shard for r in results] == [0, 1, 2] and len(seen) == 3
    assert [r.first_user_id for r in results] == [0, 100, 200]
    table, users, _ = _ids(log)
    assert table.num_rows == sum(r.written_rows for r in results) > 0
    assert all(r.quarantined_rows == 0 and r.peak_rss_mib > 0 for r in results)
    assert all(0 < r.cpu_seconds for r in results)
