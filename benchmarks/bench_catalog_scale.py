"""Benchmark: the Retriever's index at streaming-service scale (28k, 1M and 10M songs).

What it does: takes the real catalog's song latents (the VAE's, 28,356 x 5) and grows the
catalog with synthetic latents (a real song's latent plus Gaussian noise of a quarter of
each dimension's spread, so the density looks like the real one) to 1,000,000 and
10,000,000 songs. For each size it builds each index kind through the code
``encore index build`` runs (rl/songs/index_build.py ``build_index``: the exact KD-tree the
Retriever serves by default, faiss IVF-Flat, optionally faiss HNSW), which checks
recall@20 against exact brute force on 200 sampled queries and widens an approximate
index's search until recall >= 0.99. Then it prints build time, index memory, and p50/p99
latency of single queries through ``KnnIndex.query`` (what one Retriever call on a cache
miss costs, Python included) on 200 other queries, half catalog songs and half points
that are no song.

Run: ``nice .venv/bin/python benchmarks/bench_catalog_scale.py [--sizes 28356 1000000
10000000] [--kinds exact ivf hnsw]``. Single-threaded (OMP_NUM_THREADS=1) so the figures do
not depend on the machine's load of other threads; expect ~10 minutes at 10M on 2 cores
and ~4 GB of memory (the KD-tree, the exact reference, the track-id table).
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
from rl.songs.index_build import IndexConfig, build_index, recall_queries  # noqa: E402

K = 20  # the neighbour table's width: what a Retriever call asks for at most
N_QUERIES = 200


def grown_catalog(real: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if size <= len(real):
        return real[:size]
    anchors = real[rng.integers(0, len(real), size - len(real))]
    noise = rng.normal(0.0, 0.25, anchors.shape).astype(np.float32) * real.std(axis=0)
    return np.concatenate([real, anchors + noise]).astype(np.float32)


def single_query_ms(index, queries: np.ndarray) -> tuple[float, float]:
    latencies = []
    for query in queries:
        started = time.perf_counter()
        index.query(query[None, :], k=K)
        latencies.append((time.perf_counter() - started) * 1000.0)
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))


def swap_cost(built, latents: np.ndarray, track_ids: np.ndarray) -> dict:
    """What a Retriever replica pays to hot-swap to this index: save it as a registry
    version (what `encore index build` writes), then load it the way the replica does
    (checksums verified, faiss index read, recall probe against brute force)."""
    import shutil
    import tempfile

    from rl.songs.index_registry import IndexRegistry, catalog_fingerprint
    from rl.songs.index_slot import load_registry_index

    root = tempfile.mkdtemp(prefix="encore-index-bench-")
    try:
        fingerprint = catalog_fingerprint(latents, track_ids)
        started = time.perf_counter()
        entry = IndexRegistry(root).register(built, source={"fingerprint": fingerprint},
                                             build_config={})  # fmt: skip
        saved = time.perf_counter() - started
        disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
        started = time.perf_counter()
        load_registry_index(root, entry.version, fingerprint)
        return {"save_s": saved, "load_s": time.perf_counter() - started,
                "disk_mib": disk / 2**20}  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench(latents: np.ndarray, track_ids: np.ndarray, kind: str, swap: bool = False) -> dict:
    config = IndexConfig(kind=kind, recall_k=K, recall_queries=N_QUERIES, threads=1)
    built = build_index(latents, track_ids, config)
    extra = swap_cost(built, latents, track_ids) if swap else {}
    # Timed queries differ from the recall check's (another seed).
    p50, p99 = single_query_ms(built.index, recall_queries(latents, N_QUERIES, seed=99))
    report = built.report
    params = built.params
    setting = {
        "exact": "exact",
        "ivf": f"nlist {params.get('nlist')}, nprobe {params.get('breadth')}",
        "hnsw": f"M {params.get('hnsw_m')}, efSearch {params.get('breadth')}",
    }[built.kind]
    return {"build_s": report["build_s"], "memory_mib": report["index_bytes"] / 2**20,
            "p50_ms": p50, "p99_ms": p99, "recall": report["recall"]["value"],
            "setting": setting, **extra}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[28_356, 1_000_000, 10_000_000])
    parser.add_argument("--kinds", nargs="+", default=["exact", "ivf"],
                        choices=["exact", "ivf", "hnsw"])  # fmt: skip
    parser.add_argument("--data", default="data", help="data root holding the embedding")
    parser.add_argument("--swap-cost", action="store_true",
                        help="also save each index as a registry version and time its load "
                        "as a Retriever replica does (verify, read, probe)")  # fmt: skip
    args = parser.parse_args()
    if importlib.util.find_spec("faiss") is None and set(args.kinds) - {"exact"}:
        print("faiss is not installed (pip install faiss-cpu): only the exact index is built")
        args.kinds = ["exact"]
    rng = np.random.default_rng(0)
    real = ensure_song_embedding(f"{args.data}/embedding", progress=False).latents
    rows = []
    for size in args.sizes:
        latents = grown_catalog(real, size, rng)
        track_ids = np.arange(size).astype(str)
        for kind in args.kinds:
            row = bench(latents, track_ids, kind, swap=args.swap_cost)
            rows.append((size, kind, row))
            print(f"{size:>11,} {kind:<6} {row}", flush=True)
        del latents, track_ids
    print(f"\nk = {K}, {N_QUERIES} single queries, 1 thread; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")  # fmt: skip
    swap = " save s | load s | disk MiB |" if args.swap_cost else ""
    print(f"| songs | index | build s | memory MiB | p50 ms | p99 ms | recall@20 | setting |{swap}")
    print("|---" * (8 + 3 * bool(args.swap_cost)) + "|")
    for size, name, row in rows:
        cells = [f"{size:,}", name, f"{row['build_s']:.1f}", f"{row['memory_mib']:.0f}",
                 f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}", f"{row['recall']:.4f}",
                 row["setting"]]  # fmt: skip
        if args.swap_cost:
            cells += [f"{row['save_s']:.1f}", f"{row['load_s']:.1f}", f"{row['disk_mib']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
