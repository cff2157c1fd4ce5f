import numpy as np
import pytest

from rl.songs.retrieval import KnnIndex, RetrievalError, brute_force_topk, recall_at_k


@pytest.fixture()
def latents(rng):
    return rng.normal(size=(500, 5)).astype(np.float32)


@pytest.fixture()
def index(latents):
    return KnnIndex(latents, [f"t{i}" for i in range(len(latents))])


def test_topk_matches_brute_force(index, latents, rng):
    queries = rng.normal(size=(64, 5)).astype(np.float32)
    answer = index.query(queries, k=7)
    rows, distances = brute_force_topk(latents, queries, 7)
    np.testing.assert_array_equal(answer.rows, rows)
    np.testing.assert_allclose(answer.distances, distances, rtol=1e-4, atol=1e-4)
    assert answer.track_ids[0, 0] == f"t{rows[0, 0]}"


def test_brute_force_reference_against_a_python_loop(latents, rng):
    query = rng.normal(size=5)
    naive = sorted(range(len(latents)), key=lambda i: float(np.sum((latents[i] - query) ** 2)))[:4]
    rows, _ = brute_force_topk(latents, query, 4)
    assert list(rows[0]) == naive


def test_exclude_one_set_for_all_queries(index, latents):
    queries = latents[:3]
    plain = index.query(queries, k=4)
    banned = set(plain.track_ids[:, :2].ravel())
    answer = index.query(queries, k=4, exclude=banned)
    assert not banned & set(answer.track_ids.ravel())
    # What remains is still the exact top-k of the non-excluded songs.
    keep = np.array([f"t{i}" not in banned for i in range(len(latents))])
    rows, _ = brute_force_topk(latents[keep], queries, 4)
    np.testing.assert_array_equal(answer.rows, np.flatnonzero(keep)[rows])


def test_exclude_per_query_and_self(index):
    answer = index.neighbours_of_tracks(["t1", "t2"], k=3)
    assert "t1" not in answer.track_ids[0] and "t2" not in answer.track_ids[1]
    per_query = index.query(index.latents[[1, 2]], k=3, exclude=[{"t1"}, {"t2", "t1"}])
    assert "t1" not in per_query.track_ids[0]
    assert not {"t1", "t2"} & set(per_query.track_ids[1])


def test_fewer_candidates_than_k_are_padded():
    index = KnnIndex(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    answer = index.query(np.zeros(3), k=3, exclude={"a", "b"})
    assert list(answer.rows[0]) == [2, -1, -1]
    assert answer.track_ids[0, 1] is None and np.isinf(answer.distances[0, 1])


def test_k_larger_than_catalog_is_a_clear_error(index):
    with pytest.raises(RetrievalError, match="k=501 is larger than the catalog"):
        index.query(np.zeros(5), k=501)
    with pytest.raises(RetrievalError, match="k must be >= 1"):
        index.query(np.zeros(5), k=0)


def test_bad_inputs(index):
    with pytest.raises(RetrievalError, match="unknown track id 'zzz'"):
        index.neighbours_of_tracks(["zzz"])
    with pytest.raises(RetrievalError, match="queries must be"):
        index.query(np.zeros((2, 3)))
    with pytest.raises(RetrievalError, match="NaN"):
        index.query(np.full(5, np.nan))
    with pytest.raises(RetrievalError, match="must align"):
        KnnIndex(np.zeros((3, 5)), ["a"])


def test_recall_is_exact_on_real_vae_latents(trained_embedding):
    latents = trained_embedding.latents
    index = KnnIndex(latents, trained_embedding.track_ids)
    queries = latents[:200]
    _, distances = brute_force_topk(latents, queries, 4)
    answer = index.query(queries, k=4)
    assert recall_at_k(answer.distances, distances) == 1.0
    np.testing.assert_allclose(answer.distances, distances, atol=1e-5)


def test_recall_counts_ties_as_hits_and_misses_as_misses():
    reference = np.array([[0.0, 1.0, 2.0]])
    assert recall_at_k(np.array([[0.0, 1.0, 2.0]]), reference) == 1.0
    assert recall_at_k(np.array([[0.0, 1.0, 2.5]]), reference) == pytest.approx(2 / 3)


def test_neighbour_table_matches_per_song_queries(index, latents):
    rows, distances = index.neighbour_table(5)
    assert rows.shape == distances.shape == (len(latents), 5)
    reference = index.neighbours_of_tracks(list(index.track_ids), k=5)
    np.testing.assert_array_equal(rows, reference.rows)
    np.testing.assert_allclose(distances, reference.distances, rtol=1e-5, atol=1e-5)
    assert not np.any(rows == np.arange(len(latents))[:, None])


def test_neighbour_table_width_is_capped_by_the_catalog():
    index = KnnIndex(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    rows, _ = index.neighbour_table(10)
    assert rows.shape == (3, 2)
    assert KnnIndex(np.zeros((1, 2)), ["solo"]).neighbour_table(4)[0].shape == (1, 0)
    with pytest.raises(RetrievalError, match="width must be >= 1"):
        index.neighbour_table(0)
