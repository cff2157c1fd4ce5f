"""Benchmark: simulated and logged user-days and decisions per second, and peak memory.

What it does: builds the default simulator on the real catalog (VAE latents, kNN table,
myopic logging policy, MSSD-calibrated skips; the calibrated world of rl/simulator/targets.py:
several sessions a day, moods, experience-driven returns), then simulates N users for D
days while writing every decision and organic listen to a parquet log
(rl/feedback/log.py), and separately times the simulation alone. With --shard-users S the
population runs as shards of S users, one Ray task per shard, --parallel at a time, each
writing its own parquet files (rl/simulator/shards.py).

Run:  .venv/bin/python benchmarks/bench_simulator.py [--users 100000] [--days 60]
      .venv/bin/python benchmarks/bench_simulator.py --users 1000000 --shard-users 100000 --skip-sim-only
Prints user-days/s and decisions/s for simulate-only and simulate+write, the CPU seconds
spent (process time, all threads: the figure to trust on a shared, loaded machine, where
wall time also counts other processes), and peak RSS (per shard process when sharded).
The target is 100,000 users x 60 days simulated and written in <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time

from rl.feedback.log import FeedbackLogWriter
from rl.simulator.config import SimulatorConfig
from rl.simulator.real_catalog import build_simulator, catalog_corpus


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sim-only", action="store_true", help="time only simulate+write")
    parser.add_argument(
        "--shard-users", type=int, default=0, help="users per Ray shard (0: one process)"
    )
    parser.add_argument("--parallel", type=int, default=2, help="shards at a time (Ray CPUs)")
    args = parser.parse_args()

    started = time.perf_counter()
    corpus = catalog_corpus(args.k, SimulatorConfig(), args.seed)
    corpus_s = time.perf_counter() - started
    print(
        f"corpus: {len(corpus)} songs, neighbour table {corpus.neighbours.shape}, {corpus_s:.1f} s"
    )
    user_days = args.users * args.days
    if args.shard_users:
        run_sharded(args, corpus, user_days)
        return

    if not args.skip_sim_only:
        built = build_simulator(args.users, args.k, args.seed, corpus=corpus)
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = built.simulator.run(args.days)
        sim_s, sim_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        print(
            f"simulate only:    {user_days:,} user-days in {sim_s:.1f} s = {user_days / sim_s:,.0f} user-days/s "
            f"({summary.decisions:,} decisions, {summary.decisions / sim_s:,.0f}/s wall, "
            f"{summary.decisions / sim_cpu:,.0f}/s CPU; CPU {sim_cpu:.1f} s)"
        )

    out = tempfile.mkdtemp(prefix="bench-sim-log-")
    try:
        started = time.perf_counter()
        built = build_simulator(args.users, args.k, args.seed, corpus=corpus)
        setup_s = time.perf_counter() - started
        started, cpu_started = time.perf_counter(), time.process_time()
        with FeedbackLogWriter(
            out, k=args.k, n_betas=len(built.layout.betas), background=True
        ) as writer:
            summary = built.simulator.run(args.days, writer=writer)
        total_s, total_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        print(
            f"simulate + write: {user_days:,} user-days in {total_s:.1f} s = {user_days / total_s:,.0f} user-days/s "
            f"({summary.decisions:,} decisions = {summary.decisions / total_s:,.0f}/s wall, "
            f"{summary.decisions / total_cpu:,.0f}/s CPU; {writer.written_organic_rows:,} organic rows; "
            f"CPU {total_cpu:.1f} s over both threads; setup incl. calibration {setup_s:.1f} s)"
        )
        print(
            f"target (100,000 x 60 in <= 60 s): {'MET' if total_s <= 60 and user_days >= 6_000_000 else 'not met'}"
        )
        print(f"quarantined rows: {writer.quarantined_rows}")
        print(f"skip shares: {summary.skip_shares}, mean reward {summary.mean_reward:.3f}")
        print(f"peak memory (ru_maxrss): {peak_rss_mib():,.0f} MiB")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run_sharded(args: argparse.Namespace, corpus, user_days: int) -> None:
    from rl.simulator.shards import simulate_sharded

    built = build_simulator(2, args.k, args.seed, corpus=corpus)  # calibrates the world once
    out = tempfile.mkdtemp(prefix="bench-sim-shards-")
    try:
        started = time.perf_counter()

        def on_shard(result) -> None:
            print(
                f"  shard {result.shard}: {result.users:,} users, {result.summary['decisions']:,} "
                f"decisions in {result.seconds:.1f} s ({result.cpu_seconds:.1f} CPU-s), "
                f"peak RSS {result.peak_rss_mib:,.0f} MiB",
                flush=True,
            )

        results = simulate_sharded(
            args.users, args.shard_users, args.days, corpus, built.policy, built.layout,
            built.simulator.config, out, seed=args.seed, parallel=args.parallel, on_shard=on_shard,
        )  # fmt: skip
        total_s = time.perf_counter() - started
        decisions = sum(result.summary["decisions"] for result in results)
        cpu = sum(result.cpu_seconds for result in results)
        print(
            f"sharded simulate + write: {user_days:,} user-days in {total_s:.1f} s = "
            f"{user_days / total_s:,.0f} user-days/s ({len(results)} shards x {args.parallel} "
            f"parallel; {decisions:,} decisions = {decisions / total_s:,.0f}/s; "
            f"{sum(r.written_organic_rows for r in results):,} organic rows; "
            f"quarantined {sum(r.quarantined_rows for r in results)}; "
            f"{cpu:,.0f} CPU-s in the shards = {decisions / cpu:,.0f} decisions per CPU-s)"
        )
        per_shard = max(r.peak_rss_mib for r in results)
        print(
            f"peak memory: max per shard process {per_shard:,.0f} MiB, driver "
            f"{peak_rss_mib():,.0f} MiB; at most {args.parallel} shards at once: "
            f"<= {args.parallel * per_shard + peak_rss_mib():,.0f} MiB (+ Ray's own processes)"
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
