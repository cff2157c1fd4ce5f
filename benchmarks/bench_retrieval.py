"""Benchmark: kNN retrieval and VAE encoding throughput.

Run: `.venv/bin/python benchmarks/bench_retrieval.py` (or `make bench`). Prints, for the
real catalog's latents (28,356 x 5) and for 1,000,000 random 5-d vectors, the queries/s of
the scikit-learn KD-tree index (single queries and one batch of 1,000) side by side with
brute-force numpy in the same run, p50/p99 per-query latency, recall@4 against brute force,
and the VAE's encode throughput. Expect a couple of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rl.songs.catalog import load_catalog
from rl.songs.embedding import ensure_song_embedding
from rl.songs.retrieval import KnnIndex, brute_force_topk, recall_at_k


def _time_single(function, queries: np.ndarray) -> np.ndarray:
    latencies = np.empty(len(queries))
    for i, query in enumerate(queries):
        started = time.perf_counter()
        function(query[None, :])
        latencies[i] = time.perf_counter() - started
    return latencies


def bench_index(name: str, latents: np.ndarray, n_single: int, k: int, rng) -> None:
    started = time.perf_counter()
    index = KnnIndex(latents, np.arange(len(latents)).astype(str))
    build = time.perf_counter() - started
    batch = latents[rng.integers(0, len(latents), 1000)] + rng.normal(
        0, 0.01, (1000, latents.shape[1])
    ).astype(np.float32)
    print(f"\n{name}: {len(latents):,} x {latents.shape[1]} (index built in {build:.2f} s)")
    print(
        f"{'method':<22}{'single q/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'batch q/s':>12}{'recall@k':>10}"
    )
    _, reference = brute_force_topk(latents, batch, k)
    for method, function in (
        ("sklearn KD-tree", lambda q: index.query(q, k=k)),
        ("brute-force numpy", lambda q: brute_force_topk(latents, q, k)),
    ):
        latencies = _time_single(function, batch[:n_single])
        started = time.perf_counter()
        answer = function(batch)
        batch_seconds = time.perf_counter() - started
        distances = answer.distances if hasattr(answer, "distances") else answer[1]
        print(
            f"{method:<22}{1 / latencies.mean():>12,.0f}{1e3 * np.percentile(latencies, 50):>9.3f}"
            f"{1e3 * np.percentile(latencies, 99):>9.3f}{len(batch) / batch_seconds:>12,.0f}"
            f"{recall_at_k(distances, reference):>10.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=int, default=300, help="single queries timed per method")
    parser.add_argument("--random-size", type=int, default=1_000_000)
    parser.add_argument("-k", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    embedding = ensure_song_embedding(progress=False)
    bench_index("catalog latents", embedding.latents, args.single, args.k, rng)
    random_latents = rng.normal(size=(args.random_size, embedding.latents.shape[1])).astype(
        np.float32
    )
    bench_index("random vectors", random_latents, min(args.single, 100), args.k, rng)

    catalog = load_catalog()
    embedding.encode(catalog.features[:100])  # warm-up
    started = time.perf_counter()
    embedding.encode(catalog.features)
    seconds = time.perf_counter() - started
    print(
        f"\nVAE encode (incl. scaling): {len(catalog) / seconds:,.0f} songs/s over {len(catalog):,} songs"
    )
    started = time.perf_counter()
    for row in catalog.features[:500]:
        embedding.encode(row[None, :])
    print(f"VAE encode, one song per call: {500 / (time.perf_counter() - started):,.0f} songs/s")


if __name__ == "__main__":
    main()
