"""The offline-built retrieval index: build + recall check against a naive reference, the
registry's versions, checksums and pointer, refusals, and the slot's hot-swap."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from rl.songs.index_build import IndexBuildError, IndexConfig, build_index, exact_topk_distances
from rl.songs.index_registry import IndexRegistry, IndexRegistryError, catalog_fingerprint
from rl.songs.index_slot import EMBEDDED_VERSION, IndexSlot
from rl.songs.retrieval import KnnIndex, recall_at_k


@pytest.fixture(scope="module")
def catalog():
    """3,000 songs in 5 dimensions, clustered like a real latent space."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(30, 5)) * 3
    latents = (centres[rng.integers(0, 30, 3000)] + rng.normal(size=(3000, 5))).astype(np.float32)
    return latents, np.array([f"t{i}" for i in range(len(latents))], dtype=object)


def naive_kth_distances(latents: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Obviously correct: every distance in a Python loop, sorted."""
    return np.array(
        [sorted(float(np.linalg.norm(row - q)) for row in latents.astype(np.float64))[:k]
         for q in queries.astype(np.float64)]
    )  # fmt: skip


def test_exact_reference_in_chunks_matches_a_python_loop(catalog):
    latents, _ = catalog
    queries = latents[:5] + 0.1
    np.testing.assert_allclose(
        exact_topk_distances(latents, queries, 7, chunk=700),
        naive_kth_distances(latents, queries, 7),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_build_reaches_the_recall_it_records(catalog, kind):
    pytest.importorskip("faiss")
    latents, track_ids = catalog
    built = build_index(latents, track_ids, IndexConfig(kind=kind, recall_queries=50))
    recall = built.report["recall"]
    assert built.kind == kind and recall["value"] >= 0.99 and recall["k"] == 20
    assert built.report["build_s"] > 0 and built.report["index_bytes"] > 0
    # Recompute the recall against the naive reference on fresh queries.
    queries = latents[::300] + np.float32(0.05)
    answer = built.index.query(queries, k=10)
    assert recall_at_k(answer.distances, naive_kth_distances(latents, queries, 10)) >= 0.99
    if kind == "exact":
        assert built.params == {} and recall["value"] == 1.0
    else:
        assert built.params["breadth"] >= 1


def test_auto_is_exact_for_small_catalogs_and_ivf_above(catalog):
    assert IndexConfig().resolved_kind(28_356) == "exact"
    assert IndexConfig().resolved_kind(10_000_000) == "ivf"
    assert IndexConfig(exact_max_songs=100).resolved_kind(3000) == "ivf"


def test_build_fails_when_recall_is_below_target(catalog):
    pytest.importorskip("faiss")
    latents, track_ids = catalog
    # IVF at its widest breadth (nprobe = nlist) is exact, so it always reaches the target;
    # an HNSW graph of degree 4 misses some neighbours at any efSearch: recall 1.0 fails.
    with pytest.raises(IndexBuildError, match="recall@"):
        build_index(
            latents + np.float32(0), track_ids,
            IndexConfig(kind="hnsw", hnsw_m=4, min_recall=1.0, recall_queries=200),
        )  # fmt: skip


def test_bad_settings_are_named():
    with pytest.raises(IndexBuildError, match="kind must be one of"):
        IndexConfig(kind="lsh")
    with pytest.raises(IndexBuildError, match="min_recall"):
        IndexConfig(min_recall=1.5)


def register(registry: IndexRegistry, latents, track_ids, kind: str) -> str:
    built = build_index(latents, track_ids, IndexConfig(kind=kind, recall_queries=20))
    source = {"fingerprint": catalog_fingerprint(latents, track_ids), "songs": len(latents)}
    return registry.register(built, source=source, build_config={"kind": kind}).version


def test_versions_round_trip_and_promote(catalog, tmp_path):
    pytest.importorskip("faiss")
    latents, track_ids = catalog
    registry = IndexRegistry(str(tmp_path))
    first = register(registry, latents, track_ids, "exact")
    second = register(registry, latents, track_ids, "ivf")
    assert [e.version for e in registry.list_versions()] == [first, second] == ["v0001", "v0002"]
    assert registry.production_version() is None
    registry.promote(second)
    registry.promote(first)
    assert registry.production_pointer()["previous"] == second
    index, entry = registry.load(
        second, expected_fingerprint=catalog_fingerprint(latents, track_ids)
    )
    assert entry.kind == "ivf" and len(index) == len(latents)
    reference = KnnIndex(latents, track_ids).query(latents[:20], k=5)
    answer = index.query(latents[:20], k=5, exclude=[{t} for t in track_ids[:20]])
    assert not set(track_ids[:20]) & set(answer.track_ids.ravel())
    assert recall_at_k(index.query(latents[:20], k=5).distances, reference.distances) >= 0.99


def test_a_corrupt_version_is_refused_and_not_promoted(catalog, tmp_path):
    latents, track_ids = catalog
    registry = IndexRegistry(str(tmp_path))
    version = register(registry, latents, track_ids, "exact")
    path = os.path.join(registry.version_uri(version), "latents.npy")
    with open(path, "r+b") as handle:
        handle.seek(-8, os.SEEK_END)
        handle.write(b"\x00" * 8)
    with pytest.raises(IndexRegistryError, match="corrupt: checksum of latents.npy differs"):
        registry.promote(version)
    os.remove(path)
    with pytest.raises(IndexRegistryError, match="latents.npy is missing"):
        registry.load(version)


def test_an_index_of_another_catalog_is_refused(catalog, tmp_path):
    latents, track_ids = catalog
    registry = IndexRegistry(str(tmp_path))
    version = register(registry, latents[:2000], track_ids[:2000], "exact")
    with pytest.raises(IndexRegistryError, match="built over another catalog"):
        registry.load(version, expected_fingerprint=catalog_fingerprint(latents, track_ids))


def test_an_unknown_manifest_format_is_refused(catalog, tmp_path):
    latents, track_ids = catalog
    registry = IndexRegistry(str(tmp_path))
    version = register(registry, latents, track_ids, "exact")
    manifest = os.path.join(registry.version_uri(version), "manifest.json")
    state = json.load(open(manifest))
    state["format"] = "encore-index/99"
    json.dump(state, open(manifest, "w"))
    with pytest.raises(IndexRegistryError, match="format 'encore-index/99'"):
        registry.get(version)


def test_slot_follows_promotions_keeps_serving_on_refusal(catalog, tmp_path):
    pytest.importorskip("faiss")
    latents, track_ids = catalog
    fingerprint = catalog_fingerprint(latents, track_ids)
    registry = IndexRegistry(str(tmp_path))
    slot = IndexSlot(KnnIndex(latents, track_ids), str(tmp_path), fingerprint)
    assert slot.sync() is None and slot.active.version == EMBEDDED_VERSION
    good = register(registry, latents, track_ids, "ivf")
    other = register(registry, latents[:2000], track_ids[:2000], "exact")
    registry.promote(good)
    assert slot.sync() is None and slot.active.version == good and slot.active.kind == "ivf"
    registry.promote(other)
    assert "built over another catalog" in (slot.sync() or "")
    assert slot.active.version == good and slot.refusals[-1]["kept"] == good
    slot.pinned_version = EMBEDDED_VERSION
    slot.sync()
    assert slot.active.version == EMBEDDED_VERSION


def test_queries_during_swaps_never_fail(catalog, tmp_path):
    pytest.importorskip("faiss")
    latents, track_ids = catalog
    registry = IndexRegistry(str(tmp_path))
    versions = [register(registry, latents, track_ids, kind) for kind in ("exact", "ivf")]
    slot = IndexSlot(
        KnnIndex(latents, track_ids), str(tmp_path), catalog_fingerprint(latents, track_ids)
    )
    errors: list[Exception] = []
    answered = [0]
    done = threading.Event()

    def query_loop() -> None:
        while not done.is_set():
            try:
                found = slot.active.index.query(
                    latents[:8], k=4, exclude=[{t} for t in track_ids[:8]]
                )
                assert (found.rows >= 0).all()
                answered[0] += 1
            except Exception as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

    worker = threading.Thread(target=query_loop)
    worker.start()
    seen = set()
    for step in range(6):
        registry.promote(versions[step % 2])
        slot.sync()
        seen.add(slot.active.version)
    done.set()
    worker.join()
    assert not errors and answered[0] > 0 and seen == set(versions)


def test_cli_builds_lists_and_promotes(trained_embedding, tmp_path, capsys):
    from rl.cli import main

    embedding_uri, index_uri = str(tmp_path / "embedding"), str(tmp_path / "indexes")
    trained_embedding.save(embedding_uri)
    common = ["--index-dir", index_uri]
    assert (
        main(["index", "build", "--embedding", embedding_uri, "--recall-queries", "50", *common])
        == 0
    )
    built = capsys.readouterr().out
    assert "building an exact index over 28,356 songs" in built and "recall@20 1.0000" in built
    assert main(["index", "promote", "v0001", *common]) == 0
    assert main(["index", "list", *common]) == 0
    listed = capsys.readouterr().out
    assert "* v0001    exact" in listed
    assert main(["index", "promote", "v0042", *common]) == 2
    assert "refused: index version 'v0042' not found" in capsys.readouterr().err
    assert main(["index", "build", "--min-recall", "2", *common]) == 2
    assert "min_recall must be in (0, 1]" in capsys.readouterr().err
