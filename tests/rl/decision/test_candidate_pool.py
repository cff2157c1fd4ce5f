"""The candidate pool's merge against a one-song-at-a-time reference, and its config."""

from __future__ import annotations

import numpy as np
import pytest

from rl.decision.candidate_pool import (
    DEFAULT_POOL,
    MULTI_SOURCE_POOL,
    NO_SOURCE,
    POOL_SOURCES,
    CandidatePoolConfig,
    exploration_draws,
    merge_pool,
    merge_pool_naive,
    ranked_by_strength,
    source_names,
    top_rows_by,
)


def _random_lists(rng, batch, n_songs, widths):
    """Ranked lists that overlap a lot (few songs), with -1 holes like real ones."""
    lists = {}
    for name, width in widths.items():
        columns = rng.integers(0, n_songs, (batch, width))
        columns[rng.random((batch, width)) < 0.15] = -1
        lists[name] = columns
    return lists


@pytest.mark.parametrize("seed", range(6))
def test_merge_matches_the_naive_reference(seed):
    rng = np.random.default_rng(seed)
    config = CandidatePoolConfig(
        quotas=(("song", 3), ("taste", 2), ("relationship", 2), ("popular", 1), ("sticky", 2))
    )
    lists = _random_lists(
        rng, 200, 25, {"song": 8, "taste": 6, "relationship": 5, "popular": 3, "sticky": 4}
    )
    exclude = rng.integers(-1, 25, (200, 6))
    fast = merge_pool(lists, config, exclude)
    slow = merge_pool_naive(lists, config, exclude)
    np.testing.assert_array_equal(fast.rows, slow.rows)
    np.testing.assert_array_equal(fast.sources, slow.sources)
    # The rules themselves: no repeats, no excluded song, padding only at the end.
    for b in range(200):
        real = fast.rows[b][fast.rows[b] >= 0]
        assert len(set(real.tolist())) == len(real)
        assert not set(real.tolist()) & set(exclude[b].tolist())
        assert (fast.rows[b, len(real) :] == -1).all()
        assert (fast.sources[b, len(real) :] == NO_SOURCE).all()


def test_quotas_then_backfill_and_first_source_wins():
    config = CandidatePoolConfig(quotas=(("song", 2), ("taste", 1), ("relationship", 1)))
    lists = {
        "song": np.array([[10, 11, 12, 13]]),
        "taste": np.array([[11, 20, 21]]),  # 11 is the song source's: taste takes 20
        "relationship": np.array([[-1, -1]]),  # a new user: no relationships
    }
    pool = merge_pool(lists, config, exclude=np.array([[12]]))
    # quota pass: song 10, 11; taste 20; relationship none -> backfill: song's next (13).
    assert pool.rows.tolist() == [[10, 11, 20, 13]]
    assert pool.source_names() == [["song", "song", "taste", "song"]]


def test_song_only_pool_is_todays_knn_pool():
    """The default pool = the first k neighbours not excluded (rl/simulator/recommender.py's
    retrieve_candidates, today's pool)."""
    from rl.simulator.recommender import retrieve_candidates

    rng = np.random.default_rng(3)
    neighbours = rng.permutation(np.arange(400)).reshape(40, 10).astype(np.int32)
    current = rng.integers(0, 40, 64)
    history = rng.integers(-1, 400, (64, 5))
    expected = retrieve_candidates(neighbours, current, history, 4)
    pool = merge_pool({"song": neighbours[current]}, DEFAULT_POOL, history)
    np.testing.assert_array_equal(pool.rows, expected)
    assert set(pool.sources[pool.rows >= 0].tolist()) == {POOL_SOURCES.index("song")}


def test_pool_runs_short_only_when_songs_run_out():
    config = CandidatePoolConfig(quotas=(("song", 2), ("taste", 2)))
    pool = merge_pool({"song": np.array([[1, 2]]), "taste": np.array([[2, 3]])}, config)
    assert pool.rows.tolist() == [[1, 2, 3, -1]]
    assert source_names(pool.sources) == [["song", "song", "taste"]]


def test_missing_source_is_backfilled_and_no_source_at_all_is_an_error():
    pool = merge_pool({"song": np.array([[1, 2, 3, 4, 5, 6]])}, MULTI_SOURCE_POOL)
    assert pool.rows.tolist() == [[1, 2, 3, 4, 5, 6, -1, -1, -1, -1]]
    with pytest.raises(ValueError, match="none of the pool's sources"):
        merge_pool({"nothing": np.array([[1]])}, DEFAULT_POOL)


def test_config_validation_and_spec_round_trip():
    config = CandidatePoolConfig.from_spec("song=4,taste=3,relationship=2,popular=1")
    assert config.k == 10 and config.sources == ("song", "taste", "relationship", "popular")
    assert CandidatePoolConfig.from_spec(config.spec()) == config
    assert CandidatePoolConfig.from_dict(config.to_dict()) == config
    assert CandidatePoolConfig.from_spec("4") == DEFAULT_POOL and DEFAULT_POOL.is_song_knn_only
    assert MULTI_SOURCE_POOL.k == 10
    with pytest.raises(ValueError, match="unknown pool source"):
        CandidatePoolConfig.from_spec("song=4,radio=2")
    with pytest.raises(ValueError, match=r"k must be in \[4, 50\]"):
        CandidatePoolConfig.from_spec("song=3")
    with pytest.raises(ValueError, match=r"k must be in \[4, 50\]"):
        CandidatePoolConfig.from_spec("song=40,taste=20")
    with pytest.raises(ValueError, match="listed twice"):
        CandidatePoolConfig.from_spec("song=2,song=2")
    with pytest.raises(ValueError, match="SOURCE=COUNT"):
        CandidatePoolConfig.from_spec("song:4")


def test_exploration_draws_are_deterministic_given_the_seed():
    top = np.array([5, 9, 2])
    a = exploration_draws(top, 50, 3, np.random.default_rng(7))
    b = exploration_draws(top, 50, 3, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert set(a.ravel().tolist()) <= {5, 9, 2}
    assert (exploration_draws(np.array([], np.int64), 4, 2, np.random.default_rng(0)) == -1).all()


def test_top_rows_and_strength_ranking():
    assert top_rows_by(np.array([1.0, 5.0, 5.0, 0.5]), 3).tolist() == [1, 2, 0]
    eligible = np.array([True, False, True, True])
    assert top_rows_by(np.array([1.0, 5.0, 5.0, 0.5]), 2, eligible).tolist() == [2, 0]
    items = np.array([[7, -1, 3, 9], [-1, -1, -1, -1]])
    strength = np.array([[0.1, 5.0, 0.9, 0.5], [1, 2, 3, 4]])
    ranked = ranked_by_strength(items, strength, 5)
    assert ranked.tolist() == [[3, 9, 7, -1, -1], [-1, -1, -1, -1, -1]]
