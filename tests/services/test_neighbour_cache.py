"""The neighbour cache answers exactly what the Retriever would, or defers to it."""

import numpy as np
import pytest

from rl.songs.retrieval import KnnIndex
from services.core.neighbour_cache import NeighbourCache, build_neighbour_cache


def reference_topk(latents, ids, row, k, exclude):
    """Naive: every distance, drop the song and the excluded ids, sort."""
    distances = np.linalg.norm(latents - latents[row], axis=1)
    order = [i for i in np.argsort(distances, kind="stable") if i != row and ids[i] not in exclude]
    return [ids[i] for i in order[:k]], distances[order[:k]]


@pytest.mark.parametrize("seed", [0, 1])
def test_lookup_matches_brute_force_or_defers(seed):
    rng = np.random.default_rng(seed)
    latents = rng.normal(size=(300, 5)).astype(np.float32)
    ids = [f"t{i}" for i in range(300)]
    cache = NeighbourCache(KnnIndex(latents, ids), width=8)
    answered = deferred = 0
    for row in rng.choice(300, 60, replace=False):
        # Exclude some of the song's own neighbours (and unknown ids) to force both paths.
        near, _ = reference_topk(latents, ids, row, 10, set())
        exclude = set(rng.choice(near, rng.integers(0, 7), replace=False)) | {"nope"}
        k = int(rng.integers(1, 5))
        got = cache.lookup(int(row), k, exclude)
        if got is None:
            deferred += 1
            assert len([t for t in near[:8] if t not in exclude]) < k
            continue
        answered += 1
        want_ids, want_distances = reference_topk(latents, ids, row, k, exclude)
        assert got[0] == want_ids
        np.testing.assert_allclose(got[1], want_distances, rtol=1e-5, atol=1e-6)
    assert answered > 0 and deferred > 0


def test_k_above_width_defers_and_width_zero_is_off():
    latents = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    ids = [f"t{i}" for i in range(20)]
    cache = NeighbourCache(KnnIndex(latents, ids), width=4)
    assert cache.lookup(0, 5, ()) is None
    assert cache.lookup(0, 4, ()) is not None
    assert build_neighbour_cache(latents, np.asarray(ids), 0) is None
    with pytest.raises(ValueError, match="width must be >= 1"):
        NeighbourCache(KnnIndex(latents, ids), width=-1)
