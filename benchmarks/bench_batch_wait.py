"""Benchmark: a lone request skipping the batch waits, side by side with always waiting.

What it does: starts a local 2-CPU Ray with Serve's direct ingress, and deploys the served
app (services/app.py, in-process user store) alternately with ``skip_lone_batch_wait`` on
and off (services/core/batch_wait.py), ``--rounds`` times each in alternating order, so
both variants see the same machine load. Each deployment gets a short warm-up, then
``/v1/recommend`` at concurrency 1 (p50: what the skip is for) and at concurrency 32
(throughput: batching must not suffer), over keep-alive loopback connections
(benchmarks/loadgen.py). Prints every run and the medians over rounds.

Run: ``.venv/bin/python benchmarks/bench_batch_wait.py [--rounds 4] [--seconds 6]``
(about 2 minutes per round on 2 busy cores). Expect the skip to cut the c1 p50 by about
the 3 ms of waits (the Ingress's 2 ms, the Scorer's 1 ms) and c32 throughput to stay.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="deployments of each variant")
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of each load run")
    parser.add_argument("--data", default=None, help="data root holding the embedding")
    args = parser.parse_args()

    import ray
    from bench_serving import free_port, http_load
    from loadgen import run
    from ray import serve

    from rl import paths
    from rl.songs.embedding import ensure_song_embedding
    from services.app import APP_NAME, start_app, use_serve_fast_path

    data_root = args.data or paths.data_dir()
    embedding = ensure_song_embedding(f"{data_root}/embedding", progress=False)
    tracks = [
        str(t) for t in np.random.default_rng(0).choice(embedding.track_ids, 2000, replace=False)
    ]
    work = tempfile.mkdtemp(prefix="encore-bench-batch-wait-")
    use_serve_fast_path()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    results: dict[bool, dict[int, list[dict]]] = {v: {1: [], 32: []} for v in (True, False)}
    try:
        for round_ in range(args.rounds):
            for skip in (True, False) if round_ % 2 == 0 else (False, True):
                run_dir = f"{work}/{round_}-{skip}"
                config = {"data_root": data_root, "registry_uri": f"{work}/registry",
                          "log_uri": f"{run_dir}/log", "journal_dir": f"{run_dir}/journal",
                          "skip_lone_batch_wait": skip}  # fmt: skip
                urls = start_app(config, http_port=free_port(), grpc_port=free_port())
                url = urls.get("http_direct", urls["http"])
                run(http_load(url, tracks, 1, 2.0, 200))  # warm-up
                for concurrency in (1, 32):
                    row = run(http_load(url, tracks, concurrency, args.seconds, 4000))
                    results[skip][concurrency].append(row)
                    print(f"round {round_} {'skip' if skip else 'wait'} c{concurrency}: "
                          f"{row['throughput']:.0f} req/s, p50 {row['p50_ms']:.1f} ms, "
                          f"p99 {row['p99_ms']:.1f} ms, {row['failures']} failed", flush=True)  # fmt: skip
                serve.delete(APP_NAME)
    finally:
        serve.shutdown()
        ray.shutdown()
    print("\n| variant | c1 p50 ms (median) | c32 req/s (median) | c32 p50 ms (median) |")
    print("|---|---|---|---|")
    for skip in (True, False):
        r = results[skip]
        print(f"| {'skip lone wait' if skip else 'always wait'} | "
              f"{np.median([x['p50_ms'] for x in r[1]]):.1f} | "
              f"{np.median([x['throughput'] for x in r[32]]):.0f} | "
              f"{np.median([x['p50_ms'] for x in r[32]]):.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
