"""Benchmark: the Retriever's index at streaming-service scale (28k, 1M and 10M songs).

What it does: takes the real catalog's song latents (the VAE's, 28,356 x 5) and grows the
catalog with synthetic latents (a real song's latent plus Gaussian noise of a quarter of
each dimension's spread, so the density looks like the real one) to 1,000,000 and
10,000,000 songs. For each size it builds, offline, the index the Retriever serves
(``rl.songs.retrieval.KnnIndex``: scikit-learn's exact KD-tree) and an approximate faiss
IVF-Flat index (nprobe raised until recall@k >= 0.99), and prints build time, index
memory, p50/p99 latency of single queries (what one Retriever call on a cache miss costs),
and recall@k against exact brute force on 200 queries (numpy, tie-aware).

Run: ``.venv/bin/python benchmarks/bench_catalog_scale.py [--sizes 28356 1000000 10000000]``.
Single-threaded (OMP_NUM_THREADS=1) so the figures do not depend on the machine's load of
other threads; expect several minutes at 10M on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from rl.songs.embedding import ensure_song_embedding  # noqa: E402
from rl.songs.retrieval import KnnIndex, brute_force_topk, recall_at_k  # noqa: E402

K = 20  # the neighbour table's width: what a Retriever call asks for at most
N_QUERIES = 200


def grown_catalog(real: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if size <= len(real):
        return real[:size]
    anchors = real[rng.integers(0, len(real), size - len(real))]
    noise = rng.normal(0.0, 0.25, anchors.shape).astype(np.float32) * real.std(axis=0)
    return np.concatenate([real, anchors + noise]).astype(np.float32)


def single_query_ms(search, queries: np.ndarray) -> tuple[float, float]:
    latencies = []
    for query in queries:
        started = time.perf_counter()
        search(query[None, :])
        latencies.append((time.perf_counter() - started) * 1000.0)
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))


def exact_reference(latents: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(Q, K) exact distances by brute force, in chunks of the catalog."""
    best = np.full((len(queries), 0), np.inf)
    for start in range(0, len(latents), 1_000_000):  # (Q, chunk) float64 distances at a time
        _, distances = brute_force_topk(latents[start : start + 1_000_000], queries, K)
        best = np.sort(np.concatenate([best, distances], axis=1), axis=1)[:, :K]
    return best


def bench_kdtree(latents: np.ndarray, queries: np.ndarray, reference: np.ndarray) -> dict:
    started = time.perf_counter()
    index = KnnIndex(latents, np.arange(len(latents)).astype(str))
    build = time.perf_counter() - started
    tree = index._index._tree  # sklearn's KDTree: its arrays are the index's memory
    memory = sum(a.nbytes for a in tree.get_arrays() if hasattr(a, "nbytes"))
    p50, p99 = single_query_ms(lambda q: index.query(q, k=K), queries)
    distances = np.stack([index.query(q[None, :], k=K).distances[0] for q in queries])
    return {"build_s": build, "memory_mib": memory / 2**20, "p50_ms": p50, "p99_ms": p99,
            "recall": recall_at_k(distances, reference), "setting": "exact"}  # fmt: skip


def bench_faiss(latents: np.ndarray, queries: np.ndarray, reference: np.ndarray) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)
    n, dim = latents.shape
    nlist = int(min(4096, max(16, 4 * np.sqrt(n))))
    started = time.perf_counter()
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist)
    train = latents[np.random.default_rng(1).integers(0, n, min(n, 50 * nlist))]
    index.train(train)
    index.add(latents)
    build = time.perf_counter() - started
    memory = len(faiss.serialize_index(index)) / 2**20
    for nprobe in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        index.nprobe = nprobe
        squared, _ = index.search(queries, K)
        recall = recall_at_k(np.sqrt(np.maximum(squared, 0)), reference)
        if recall >= 0.99:
            break
    p50, p99 = single_query_ms(lambda q: index.search(q, K), queries)
    return {"build_s": build, "memory_mib": memory, "p50_ms": p50, "p99_ms": p99,
            "recall": recall, "setting": f"nlist={nlist} nprobe={nprobe}"}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[28_356, 1_000_000, 10_000_000])
    parser.add_argument("--data", default="data", help="data root holding the embedding")
    parser.add_argument("--skip-faiss", action="store_true")
    args = parser.parse_args()
    if not args.skip_faiss and importlib.util.find_spec("faiss") is None:
        print("faiss is not installed (pip install faiss-cpu): the approximate index is skipped")
        args.skip_faiss = True
    rng = np.random.default_rng(0)
    real = ensure_song_embedding(f"{args.data}/embedding", progress=False).latents
    rows = []
    for size in args.sizes:
        latents = grown_catalog(real, size, rng)
        queries = real[rng.integers(0, len(real), N_QUERIES)]
        reference = exact_reference(latents, queries)
        rows.append((size, "KD-tree (served)", bench_kdtree(latents, queries, reference)))
        if not args.skip_faiss:
            rows.append((size, "faiss IVF-Flat", bench_faiss(latents, queries, reference)))
        for n, name, row in rows[-2:]:
            if n == size:
                print(f"{n:>11,} {name:<17} {row}", flush=True)
        del latents
    print(f"\nk = {K}, {N_QUERIES} single queries, 1 thread; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")  # fmt: skip
    print("| songs | index | build s | memory MiB | p50 ms | p99 ms | recall@20 | setting |")
    print("|---|---|---|---|---|---|---|---|")
    for size, name, row in rows:
        print(f"| {size:,} | {name} | {row['build_s']:.1f} | {row['memory_mib']:.0f} | "
              f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['recall']:.4f} | {row['setting']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
