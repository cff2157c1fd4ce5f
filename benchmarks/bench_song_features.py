"""The song table's costs: the Scorer's per-request feature lookup, and fitting the table.

What it does:
1. lookup: a table over the whole real catalog (28k songs) and a policy with song
   features; per request (1 user, k candidates) times ``PolicyScorer.action_probabilities``
   on the served observation (features looked up by latent and appended) against the same
   forward pass on an observation that already carries them. Prints p50/p99 of both and
   the lookup's added p50 (target: <= 1 ms at k = 20).
2. fit (``--fit-users N``): simulates N users x ``--fit-days`` days under the logging
   policy, then times ``fit_song_table`` on that log with Ray Data (target: 100,000 users x
   60 days in <= 2 min on 2 cores).

Run:  .venv/bin/python benchmarks/bench_song_features.py [--k 20] [--fit-users 3000]
Expect: lookup adds tens of microseconds; the fit is dominated by reading the log.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def bench_lookup(k: int, requests: int) -> None:
    from rl.decision.observation import ObservationLayout, encode_context
    from rl.longterm.song_table import (
        FEATURE_NAMES,
        ObservationSongFeatures,
        SongTableConfig,
        fit_song_table_arrays,
    )
    from rl.registry import PolicyScorer
    from rl.songs.embedding import ensure_song_embedding
    from rl.training.module import build_module

    embedding = ensure_song_embedding()
    latents, ids = np.asarray(embedding.latents, np.float32), np.asarray(embedding.track_ids)
    rng = np.random.default_rng(0)
    n = len(ids)
    table = fit_song_table_arrays(
        ids, rng.integers(1, 30, n), rng.integers(0, 10, n), ids[rng.integers(0, n, 5 * n)],
        rng.normal(size=(5 * n, latents.shape[1])), rng.poisson(1.0, 5 * n),
        horizon_days=60, config=SongTableConfig(),
    )  # fmt: skip
    index = {t: i for i, t in enumerate(ids)}
    table.latents = latents[[index[t] for t in table.track_ids]]
    base = ObservationLayout(k=k, latent_dim=latents.shape[1])
    layout = ObservationLayout(
        k=k, latent_dim=latents.shape[1], song_feature_dim=len(FEATURE_NAMES)
    )
    module = build_module(layout)
    lookup = ObservationSongFeatures(table, layout)
    served = PolicyScorer(module, "bench", song_features=lookup)
    torch.set_num_threads(1)

    def request() -> np.ndarray:
        candidates = rng.integers(0, n, k)
        return base.build(
            latents[rng.integers(0, n, 1)], rng.normal(size=(1, latents.shape[1])),
            encode_context(np.array([12]), np.array([3])), latents[candidates][None],
            np.zeros((1, k, base.n_betas)), np.ones((1, k)),
        )  # fmt: skip

    observations = [request() for _ in range(requests)]
    prepared = [lookup(o) for o in observations]
    for o in observations[:50]:
        served.action_probabilities(o)

    def timings(inputs) -> np.ndarray:
        out = []
        for o in inputs:
            start = time.perf_counter()
            served.action_probabilities(o)
            out.append(time.perf_counter() - start)
        return np.asarray(out) * 1e3

    with_lookup, without = timings(observations), timings(prepared)
    lookup_only = []
    for o in observations:
        start = time.perf_counter()
        lookup(o)
        lookup_only.append(time.perf_counter() - start)
    print(f"k={k}, {requests} requests of 1 user, table of {len(table):,} songs")
    for name, t in (("served obs (lookup + forward)", with_lookup), ("features given", without)):
        print(f"  {name:32s} p50 {np.median(t):.3f} ms  p99 {np.percentile(t, 99):.3f} ms")
    added = np.median(np.asarray(lookup_only) * 1e3)
    print(f"  lookup alone                     p50 {added:.3f} ms (target <= 1 ms)")


def bench_fit(users: int, days: int) -> None:
    import ray

    from rl.feedback.log import FeedbackLogWriter
    from rl.longterm.song_table import fit_song_table, table_summary
    from rl.simulator.real_catalog import build_simulator

    built = build_simulator(users, calibrate=False)
    with tempfile.TemporaryDirectory(prefix="encore-bench-") as work:
        log = f"{work}/log"
        start = time.perf_counter()
        with FeedbackLogWriter(log, k=built.layout.k, n_betas=built.layout.n_betas) as writer:
            summary = built.simulator.run(days, writer=writer)
        simulated = time.perf_counter() - start
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        start = time.perf_counter()
        table = fit_song_table(log, built.corpus.latents, built.corpus.track_ids)
        fitted = time.perf_counter() - start
        ray.shutdown()
    print(
        f"fit: {users:,} users x {days} days ({summary.decisions:,} decisions, simulated in "
        f"{simulated:.0f} s): song table fitted with Ray Data in {fitted:.1f} s; "
        f"{table_summary(table)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--fit-users", type=int, default=0, help="0 = skip the fit benchmark")
    parser.add_argument("--fit-days", type=int, default=60)
    args = parser.parse_args()
    bench_lookup(args.k, args.requests)
    if args.fit_users:
        bench_fit(args.fit_users, args.fit_days)


if __name__ == "__main__":
    main()
