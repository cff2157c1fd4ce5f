"""The simulator's multi-source candidate pool (rl/simulator/recommender.py)."""

from types import SimpleNamespace

import numpy as np
import pytest

from rl.decision.candidate_pool import (
    DEFAULT_POOL,
    MULTI_SOURCE_POOL,
    POOL_SOURCES,
    CandidatePoolConfig,
)
from rl.decision.observation import ObservationLayout
from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy
from rl.simulator import Simulator, SimulatorConfig, build_corpus
from rl.simulator.recommender import SimulatorCandidatePool


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    n = 600
    return build_corpus(
        rng.standard_normal((n, 5)).astype(np.float32), [f"s{i:05d}" for i in range(n)], 10,
        SimulatorConfig(), rng, durations_s=rng.uniform(120, 320, n),
        popularity=rng.uniform(0, 100, n),
    )  # fmt: skip


def _table(n, seed=1):
    """What the exploration sources read of a song table aligned to the corpus."""
    rng = np.random.default_rng(seed)
    listens = rng.integers(0, 30, n)
    return SimpleNamespace(
        listens=listens,
        popularity=np.log1p(listens).astype(np.float32),
        stickiness=rng.uniform(0, 3, n).astype(np.float32),
        discoveries=rng.integers(0, 3, n),
    )


def _run(corpus, layout, pool, seed=3, days=3):
    policy = MyopicListenPolicy(ListenProbabilityModel(layout, corpus.latent_scale))
    simulator = Simulator(corpus, 300, policy, layout, seed=seed, candidate_pool=pool)
    return simulator, [simulator.run_day() for _ in range(days)]


def test_song_only_pool_reproduces_todays_simulation(corpus):
    layout = ObservationLayout(k=4)
    _, plain = _run(corpus, layout, None)
    _, pooled = _run(corpus, layout, SimulatorCandidatePool(DEFAULT_POOL, corpus))
    for a, b in zip(plain, pooled, strict=True):
        np.testing.assert_array_equal(
            a.concatenated()["candidates"], b.concatenated()["candidates"]
        )
        np.testing.assert_array_equal(a.concatenated()["chosen"], b.concatenated()["chosen"])


def test_multi_source_pool_in_the_simulator(corpus):
    layout = ObservationLayout(k=MULTI_SOURCE_POOL.k)
    table = _table(len(corpus))
    pool = SimulatorCandidatePool(MULTI_SOURCE_POOL, corpus, table, layout.betas)
    simulator, buffers = _run(corpus, layout, pool, days=4)
    candidates = np.concatenate([b.concatenated()["candidates"] for b in buffers])
    current = np.concatenate([b.concatenated()["current"] for b in buffers])
    assert candidates.shape[1] == 10 and (candidates[:, :4] >= 0).all()
    real = candidates >= 0
    assert real.sum(axis=1).mean() > 9.5  # the backfill keeps the pool full
    for row, playing in zip(candidates[:500], current[:500], strict=True):
        songs = row[row >= 0]
        assert len(set(songs.tolist())) == len(songs) and playing not in songs
    # Every source contributes once users have a library (day 3's sessions).
    state = simulator.state
    users = np.flatnonzero((state.library_item >= 0).any(axis=1))[:50]
    history = np.full((len(users), 3), -1)
    result = pool.candidates(state, users, state.home_pool[users, 0], history, simulator.day)
    seen = {POOL_SOURCES[c] for c in result.sources.ravel() if c >= 0}
    assert seen == set(MULTI_SOURCE_POOL.sources)
    rel = POOL_SOURCES.index("relationship")
    for b, user in enumerate(users):
        from_library = result.rows[b][result.sources[b] == rel]
        assert set(from_library.tolist()) <= set(state.library_item[user].tolist())
    popular = result.rows[result.sources == POOL_SOURCES.index("popular")]
    assert set(popular.tolist()) <= set(pool.top["popular"].tolist())


def test_pool_is_deterministic_given_its_seed_and_checks_k(corpus):
    layout = ObservationLayout(k=MULTI_SOURCE_POOL.k)
    table = _table(len(corpus))
    runs = [
        _run(corpus, layout, SimulatorCandidatePool(MULTI_SOURCE_POOL, corpus, table), days=2)[1]
        for _ in range(2)
    ]
    np.testing.assert_array_equal(
        runs[0][1].concatenated()["candidates"], runs[1][1].concatenated()["candidates"]
    )
    with pytest.raises(ValueError, match="the candidate pool has k=10, the layout k=4"):
        _run(corpus, ObservationLayout(k=4), SimulatorCandidatePool(MULTI_SOURCE_POOL, corpus))
    with pytest.raises(ValueError, match="align it"):
        SimulatorCandidatePool(MULTI_SOURCE_POOL, corpus, _table(10))


def test_without_a_song_table_the_exploration_slots_are_backfilled(corpus):
    config = CandidatePoolConfig(quotas=(("song", 3), ("popular", 1)))
    pool = SimulatorCandidatePool(config, corpus)
    layout = ObservationLayout(k=4)
    _, buffers = _run(corpus, layout, pool, days=1)
    candidates = buffers[0].concatenated()["candidates"]
    assert (candidates >= 0).all()
