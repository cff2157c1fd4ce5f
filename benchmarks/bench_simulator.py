"""Benchmark: simulated and logged user-days per second, and peak memory.

What it does: builds the default simulator on the real catalog (VAE latents, kNN table,
myopic logging policy, MSSD-calibrated skips), then simulates N users for D days while
writing every decision and organic listen to a parquet log (rl/feedback/log.py), and
separately times the simulation alone.

Run:  .venv/bin/python benchmarks/bench_simulator.py [--users 100000] [--days 60]
Expect (2 idle cores): 100,000 users x 60 days simulated and written in <= 60 s (the
target); prints user-days/s for simulate-only and simulate+write, decisions/s, the CPU
seconds spent (process time, all threads: the figure to trust on a shared, loaded
machine, where wall time also counts other processes), and peak RSS.
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
    args = parser.parse_args()

    started = time.perf_counter()
    corpus = catalog_corpus(args.k, SimulatorConfig(), args.seed)
    corpus_s = time.perf_counter() - started
    print(
        f"corpus: {len(corpus)} songs, neighbour table {corpus.neighbours.shape}, {corpus_s:.1f} s"
    )
    user_days = args.users * args.days

    if not args.skip_sim_only:
        built = build_simulator(args.users, args.k, args.seed, corpus=corpus)
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = built.simulator.run(args.days)
        sim_s, sim_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        print(
            f"simulate only:    {user_days:,} user-days in {sim_s:.1f} s = {user_days / sim_s:,.0f} user-days/s "
            f"({summary.decisions:,} decisions, {summary.decisions / sim_s:,.0f}/s; CPU {sim_cpu:.1f} s)"
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
            f"({summary.decisions:,} decisions, {writer.written_organic_rows:,} organic rows; "
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


if __name__ == "__main__":
    main()
