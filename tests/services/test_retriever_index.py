"""The real Retriever deployment under Serve following the index registry: it serves the
embedded exact index until one is promoted, swaps versions while requests flow (0 failed),
and refuses a corrupt version while the one it serves keeps answering."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("faiss")

pytestmark = pytest.mark.ray


def _build(index_uri: str, embedding, kind: str) -> str:
    from rl.songs.index_build import IndexConfig, build_index
    from rl.songs.index_registry import IndexRegistry, catalog_fingerprint

    built = build_index(
        embedding.latents, embedding.track_ids, IndexConfig(kind=kind, recall_queries=50)
    )
    source = {"fingerprint": catalog_fingerprint(embedding.latents, embedding.track_ids)}
    return IndexRegistry(index_uri).register(built, source=source, build_config={}).version


@pytest.fixture(scope="module")
def retriever(small_embedding_uri, tmp_path_factory):
    from ray import serve

    from rl.songs.embedding import load_song_embedding
    from services.retriever import Retriever
    from tests.services.conftest import serve_on_local_ray

    embedding = load_song_embedding(small_embedding_uri)
    index_uri = str(tmp_path_factory.mktemp("indexes"))
    versions = [_build(index_uri, embedding, kind) for kind in ("exact", "ivf", "hnsw")]
    config = {"embedding_uri": small_embedding_uri, "index_uri": index_uri,
              "data_root": str(tmp_path_factory.mktemp("data")), "poll_interval_s": 0.1}  # fmt: skip
    with serve_on_local_ray():
        deployment: object = Retriever
        handle = serve.run(
            deployment.options(autoscaling_config=None, num_replicas=1).bind(config),  # type: ignore[attr-defined]
            name="retriever",
            route_prefix=None,
        )
        yield handle, embedding, index_uri, versions


def _wait_for(handle, version: str, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = handle.describe.remote().result()
        if described["index_version"] == version:
            return described
        time.sleep(0.05)
    raise AssertionError(f"the Retriever never served {version}: {described}")


def test_swaps_index_versions_while_requests_flow(retriever):
    from rl.songs.index_registry import IndexRegistry
    from rl.songs.retrieval import brute_force_topk, recall_at_k

    handle, embedding, index_uri, versions = retriever
    assert handle.describe.remote().result()["index_version"] == "embedded"
    latents, track_ids = embedding.latents, embedding.track_ids
    rng = np.random.default_rng(0)
    failures: list[str] = []
    answers: list[float] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        local = np.random.default_rng(seed)
        while not stop.is_set():
            rows = local.integers(0, len(latents), 4)
            excludes = [[str(track_ids[r])] for r in rows]
            try:
                answer = handle.neighbours.remote((latents[rows], 5, excludes)).result()
                _, reference = brute_force_topk(latents, latents[rows], 6)
                distances = np.array([a[1] for a in answer])
                if any(excludes[i][0] in answer[i][0] for i in range(4)) or distances.shape != (
                    4,
                    5,
                ):
                    failures.append(f"bad answer {answer}")
                # Each query's own song (distance 0) is excluded: compare with ranks 2..6.
                answers.append(recall_at_k(distances, reference[:, 1:]))
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    clients = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for thread in clients:
        thread.start()
    registry = IndexRegistry(index_uri)
    served = []
    try:
        for step in range(6):
            version = versions[int(rng.integers(0, 3))] if step else versions[1]
            registry.promote(version)
            served.append(_wait_for(handle, version)["kind"])
            time.sleep(0.3)  # requests flow on this version for a while
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert not failures, failures[:3]
    assert len(answers) > 50, f"only {len(answers)} requests answered"
    assert np.mean(answers) >= 0.99
    assert "ivf" in served and len(set(served)) >= 2


def test_a_corrupt_version_is_refused_and_the_served_one_keeps_answering(retriever):
    from rl.registry import write_production_pointer
    from rl.songs.index_registry import IndexRegistry, IndexRegistryError

    handle, embedding, index_uri, versions = retriever
    registry = IndexRegistry(index_uri)
    registry.promote(versions[0])
    _wait_for(handle, versions[0])
    corrupt = _build(index_uri, embedding, "ivf")
    with open(os.path.join(registry.version_uri(corrupt), "index.faiss"), "r+b") as handle_file:
        handle_file.seek(100)
        handle_file.write(b"\xff" * 16)
    with pytest.raises(IndexRegistryError, match="checksum of index.faiss differs"):
        registry.promote(corrupt)
    # A file damaged after its promotion: the pointer names it, the replica must refuse it.
    write_production_pointer(index_uri, corrupt, previous=versions[0])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        described = handle.describe.remote().result()
        if described["refusals"]:
            break
        time.sleep(0.05)
    refusal = described["refusals"][-1]
    assert refusal["version"] == corrupt and "checksum of index.faiss differs" in refusal["reason"]
    assert described["index_version"] == versions[0] == refusal["kept"]
    answer = handle.neighbours.remote((embedding.latents[:2], 3, [[], []])).result()
    assert [len(ids) for ids, _ in answer] == [3, 3]
