"""Load benchmark of the served app: Ray Serve (HTTP and gRPC) against an in-process baseline.

What it does: starts the Serve app (services/app.py) on a local 2-CPU Ray, and the same
models in one uvicorn process (services/inprocess.py, the baseline), then drives
``/v1/recommend`` on loopback at concurrency 1, 8, 32 and 256, each for a bounded time and
count, over the Ingress replica's own ports (direct ingress, the default: "direct http",
"direct grpc") and through Serve's proxies ("proxy http", "proxy grpc"), and prints
p50/p99 latency and throughput side by side with the Serve/baseline ratio, and the CPU milliseconds each server process (proxy, each deployment, or the
baseline) and the load generator itself spent per request (from /proc: steadier than
throughput on a shared machine). Last, the hot-swap under steady load: two registry versions are promoted while
requests flow; it prints failed requests and the longest gap between responses. Then the
app on a shared Redis user store (a redis-server it starts) with 1 and 2 Ingress replicas
("redis 1x/2x http", load spread over the replicas' ports), and kill -9 drills on the
2-replica app: one Ingress replica, then one Scorer replica, killed under load
(services/failure_drill.py: error rate, recovery time, acknowledged feedback lost). The
"shed" column counts 503s (load shedding past ``shed_queue_length``, e.g. at 256).

Run: ``.venv/bin/python benchmarks/bench_serving.py [--seconds 6] [--max-requests 4000]``
(``--proxy-only`` for Serve without direct ingress; ``--ingress-replicas`` (none) and
``--skip-kill`` to leave the shared-store runs out). The HTTP load generator is
benchmarks/loadgen.py (keep-alive, ~0.1 ms of CPU per request).
Expect a few minutes. Targets (issue 5): Serve >= 0.5x the baseline's throughput at
concurrency 32 with p99 < 100 ms on 2 cores; zero failures and no gap > 1 s in a swap.
The load generator shares the 2 cores with the servers, as a client on loopback does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(select: Callable[[int, str], str | None]) -> dict[str, float]:
    """User+system CPU seconds of the processes ``select(pid, title)`` names, summed per
    name, read from /proc (Linux). CPU per request is a steadier figure than throughput
    on a machine shared with other work."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            name = select(int(entry.name), title)
            if name is None:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def serve_process(pid: int, title: str) -> str | None:
    """Ray titles its workers ``ray::ServeReplica:<app>:<deployment>`` / ``ray::ProxyActor``."""
    if "ServeReplica:encore:" in title:
        # While a task runs Ray appends its name: "...:Ingress.handle_request".
        return title.split("ServeReplica:encore:")[1].split()[0].split(".")[0]
    if "ProxyActor" in title:
        return "proxy"
    return None


def measured(load: Any, select: Callable[[int, str], str | None]) -> dict:
    """Run one load coroutine; add the server processes' (and the load generator's own)
    CPU milliseconds per request."""
    before = process_cpu_seconds(select)
    client_before = time.process_time()
    from loadgen import run

    result = run(load)
    client_s = time.process_time() - client_before
    after = process_cpu_seconds(select)
    n = max(result["requests"], 1)
    result["client_cpu_ms"] = round(1000.0 * client_s / n, 2)
    result["cpu_ms"] = {
        name: round(1000.0 * (after[name] - before.get(name, 0.0)) / n, 2) for name in sorted(after)
    }
    result["cpu_ms_total"] = round(sum(result["cpu_ms"].values()), 2)
    return result


def summarise(
    latencies: list[float], elapsed: float, failures: int, shed: int = 0
) -> dict[str, float]:
    """``failures`` counts every non-200 answer; ``shed`` the 503s among them (load shedding)."""
    values = np.asarray(latencies) * 1000.0
    return {
        "requests": len(values),
        "failures": failures - shed,
        "shed": shed,
        "throughput": len(values) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": float(np.percentile(values, 50)) if len(values) else float("nan"),
        "p99_ms": float(np.percentile(values, 99)) if len(values) else float("nan"),
    }


async def http_load(
    url: str | list[str], tracks: list[str], concurrency: int, seconds: float, max_requests: int
) -> dict:
    """Closed-loop clients on keep-alive connections (benchmarks/loadgen.py: ~0.1 ms of
    client CPU per request, so the 2 cores go to the servers being measured)."""
    from loadgen import closed_loop_http

    def body(worker_id: int, i: int) -> dict:
        return {
            "user_id": f"bench-{worker_id}",
            "track_id": tracks[(worker_id * 7919 + i) % len(tracks)],
        }

    started = time.perf_counter()
    latencies, failures, reasons, shed = await closed_loop_http(
        url, "/v1/recommend", body, concurrency, started + seconds, max_requests, time.perf_counter
    )
    for reason in reasons:
        print(f"HTTP failure: {reason}", file=sys.stderr)
    return summarise(latencies, time.perf_counter() - started, failures, shed)


async def grpc_load(
    target: str, tracks: list[str], concurrency: int, seconds: float, max_requests: int
) -> dict:
    import grpc

    from services.proto import encore_pb2, encore_pb2_grpc

    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = encore_pb2_grpc.RecommenderStub(channel)
        metadata = (("application", "encore"),)

        async def worker(worker_id: int) -> None:
            nonlocal failures
            i = 0
            while time.perf_counter() < deadline and len(latencies) + failures < max_requests:
                request = encore_pb2.RecommendRequest(
                    user_id=f"bench-{worker_id}",
                    track_id=tracks[(worker_id * 7919 + i) % len(tracks)],
                )
                i += 1
                started = time.perf_counter()
                try:
                    await stub.Recommend(request, metadata=metadata, timeout=30)
                    latencies.append(time.perf_counter() - started)
                except grpc.RpcError as exc:
                    failures += 1
                    if failures <= 3:
                        print(f"gRPC failure: {exc.code()} {exc.details()}", file=sys.stderr)

        started = time.perf_counter()
        await asyncio.gather(*[worker(w) for w in range(concurrency)])
        return summarise(latencies, time.perf_counter() - started, failures)


def wait_http(url: str, timeout_s: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (
                httpx.post(
                    f"{url}/v1/recommend", json={"user_id": "w", "track_id": "x"}, timeout=5
                ).status_code
                == 404
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not come up")


def warm_up(url: str, tracks: list[str]) -> None:
    from loadgen import run

    run(http_load(url, tracks, 8, 2.0, 300))


def hot_swap_under_load(
    url: str, tracks: list[str], registry_uri: str, work: str, seconds: float
) -> dict:
    """Promote two fresh versions while 8 clients send requests; failures and the worst gap."""
    import threading

    import httpx
    import torch

    from rl.decision.observation import ObservationLayout
    from rl.registry import MODULE_SUBPATH, ModelRegistry
    from rl.training.module import build_module

    registry = ModelRegistry(registry_uri)
    versions = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        checkpoint = os.path.join(work, f"checkpoint-{seed}")
        build_module(ObservationLayout()).save_to_path(os.path.join(checkpoint, *MODULE_SUBPATH))
        versions.append(
            registry.register(
                checkpoint,
                algo="bench",
                train_config={},
                layout=ObservationLayout(),
                data={},
                metrics={},
            ).version
        )
    answers: list[tuple[float, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client_loop(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            i = 0
            while not stop.is_set():
                try:
                    response = client.post(
                        "/v1/recommend",
                        json={"user_id": f"swap-{worker}", "track_id": tracks[i % len(tracks)]},
                    )
                    if response.status_code == 200:
                        answers.append((time.monotonic(), response.json()["model_version"]))
                    else:
                        failures.append(str(response.status_code))
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                i += 1

    threads = [threading.Thread(target=client_loop, args=(w,), daemon=True) for w in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(seconds / 3)
    swaps = []
    for version in versions:
        promoted_at = time.monotonic()
        registry.promote(version)
        while time.monotonic() < promoted_at + 30 and not any(
            v == version and t > promoted_at for t, v in answers[-50:]
        ):
            time.sleep(0.05)
        swaps.append(time.monotonic() - promoted_at)
        time.sleep(seconds / 3)
    stop.set()
    for thread in threads:
        thread.join()
    times = np.asarray(sorted(t for t, _ in answers))
    return {
        "requests": len(answers),
        "failures": len(failures),
        "max_gap_s": float(np.max(np.diff(times))) if len(times) > 1 else float("nan"),
        "promote_to_served_s": [round(s, 2) for s in swaps],
        "versions_seen": sorted({v for _, v in answers}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of each load run")
    parser.add_argument(
        "--max-requests", type=int, default=4000, help="request cap of each load run"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 256])
    parser.add_argument(
        "--ingress-replicas",
        type=int,
        nargs="*",
        default=[1, 2],
        help="Ingress replica counts measured with the shared Redis store (none: skip)",
    )
    parser.add_argument("--skip-kill", action="store_true", help="skip the kill -9 drills")
    parser.add_argument(
        "--data", default=None, help="data root holding the embedding (default ./data)"
    )
    parser.add_argument("--skip-swap", action="store_true")
    parser.add_argument(
        "--always-batch-wait",
        action="store_true",
        help="lone requests wait for a batch too (skip_lone_batch_wait=False; the default "
        "skips the Ingress's and the Scorer's batch waits for a request with no company)",
    )
    parser.add_argument(
        "--proxy-only",
        action="store_true",
        help="serve through Serve's proxies only (no direct ingress), as before issue 5's fix",
    )
    args = parser.parse_args()

    import ray
    from ray import serve

    from rl import paths
    from rl.songs.embedding import ensure_song_embedding
    from services.app import start_app, use_serve_fast_path

    data_root = args.data or paths.data_dir()
    work = tempfile.mkdtemp(prefix="encore-bench-serving-")
    embedding = ensure_song_embedding(f"{data_root}/embedding", progress=False)
    tracks = list(np.random.default_rng(0).choice(embedding.track_ids, 2000, replace=False))
    settings = {
        "data_root": data_root,
        "registry_uri": f"{work}/registry",
        "log_uri": f"{work}/log",
        "journal_dir": f"{work}/journal",
        "poll_interval_s": 0.5,
        "skip_lone_batch_wait": not args.always_batch_wait,
    }
    results: dict[str, dict[int, dict]] = {"baseline http": {}}

    baseline_port = free_port()
    baseline_env = {
        **os.environ,
        "ENCORE_SERVICE_ARGS": json.dumps({**settings, "journal_dir": f"{work}/journal-baseline"}),
    }
    baseline = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "services.inprocess:create_app", "--port", str(baseline_port),
         "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=baseline_env,
    )  # fmt: skip
    try:
        baseline_url = f"http://127.0.0.1:{baseline_port}"
        wait_http(baseline_url)
        warm_up(baseline_url, tracks)
        in_baseline = lambda pid, title: "baseline" if pid == baseline.pid else None  # noqa: E731
        for concurrency in args.concurrency:
            results["baseline http"][concurrency] = measured(
                http_load(baseline_url, tracks, concurrency, args.seconds, args.max_requests),
                in_baseline,
            )
    finally:
        baseline.terminate()
        baseline.wait(timeout=30)

    if args.proxy_only:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "0"
    else:
        use_serve_fast_path()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    swap = None
    try:
        http_port, grpc_port = free_port(), free_port()
        urls = start_app(settings, http_port=http_port, grpc_port=grpc_port)
        targets = {"proxy http": urls["http"], "proxy grpc": urls["grpc"]}
        if "http_direct" in urls:  # Serve runs with direct ingress: measure both ways in
            targets = {
                "direct http": urls["http_direct"],
                "direct grpc": urls["grpc_direct"],
                **targets,
            }
        warm_up(urls["http"], tracks)
        for concurrency in args.concurrency:
            for system, target in targets.items():
                load = http_load if "http" in system else grpc_load
                results.setdefault(system, {})[concurrency] = measured(
                    load(target, tracks, concurrency, args.seconds, args.max_requests),
                    serve_process,
                )
        if not args.skip_swap:
            swap = hot_swap_under_load(
                urls.get("http_direct", urls["http"]),
                tracks,
                settings["registry_uri"],
                work,
                seconds=9.0,
            )
        drills = shared_store_runs(args, settings, tracks, results, work)
    finally:
        serve.shutdown()
        ray.shutdown()

    print_table(args, results, swap, drills)
    return 0


def shared_store_runs(
    args: argparse.Namespace, settings: dict, tracks: list[str], results: dict, work: str
) -> list[dict]:
    """The app on a shared Redis store with 1 and 2 Ingress replicas (direct HTTP, load
    spread over the replicas' ports), then kill -9 drills on the last one."""
    from services.app import direct_ingress_urls, start_app
    from services.failure_drill import check_durability, kill_under_load
    from services.redis_server import start_redis_server

    if not args.ingress_replicas:
        return []
    redis = start_redis_server(f"{work}/redis")
    drills: list[dict] = []
    try:
        for n in args.ingress_replicas:
            config = {
                **settings, "user_store": redis.url, "user_store_namespace": f"bench-{n}",
                "ingress_min_replicas": n, "ingress_max_replicas": n,
                "scorer_min_replicas": 2 if n > 1 else 1, "log_uri": f"{work}/log-{n}",
            }  # fmt: skip
            start_app(config, http_port=free_port(), grpc_port=free_port())
            deadline = time.monotonic() + 180
            while len(direct_ingress_urls()["http"]) < n and time.monotonic() < deadline:
                time.sleep(1)
            urls = direct_ingress_urls()["http"]
            warm_up(urls[0], tracks)
            for concurrency in args.concurrency:
                results.setdefault(f"redis {n}x http", {})[concurrency] = measured(
                    http_load(urls, tracks, concurrency, args.seconds, args.max_requests),
                    serve_process,
                )
        if not args.skip_kill and args.ingress_replicas[-1] > 1:
            for victim in ("Ingress", "Scorer"):
                outcome = kill_under_load(tracks, victim, seconds=15.0, kill_after_s=4.0)
                outcome["durability"] = check_durability(outcome, config["log_uri"])
                outcome.pop("acked")
                drills.append(outcome)
    finally:
        redis.stop()
    return drills


def print_table(
    args: argparse.Namespace, results: dict, swap: dict | None, drills: list[dict]
) -> None:
    print(
        f"\n/v1/recommend on loopback, {os.cpu_count()} cores, {args.seconds:.0f} s per run (cap {args.max_requests} requests)"
    )
    print(
        f"{'system':<14} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'fail':>5} {'shed':>5} {'x baseline':>10} {'client':>6}  server CPU ms/request"
    )
    for concurrency in args.concurrency:
        base = results["baseline http"][concurrency]["throughput"]
        for system, by_concurrency in results.items():
            if concurrency not in by_concurrency:
                continue
            row = by_concurrency[concurrency]
            ratio = row["throughput"] / base if base else float("nan")
            print(
                f"{system:<14} {concurrency:>4} {row['throughput']:>8.0f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['failures']:>5} {row.get('shed', 0):>5} {ratio:>10.2f} {row['client_cpu_ms']:>6.2f}"
                f"  {row['cpu_ms_total']:.2f} {row['cpu_ms']}"
            )
    if swap is not None:
        print(
            f"\nhot-swap under load (8 clients, 2 promotions): {swap['requests']} requests, "
            f"{swap['failures']} failed, longest gap between responses {swap['max_gap_s']:.3f} s, "
            f"promote -> served in {swap['promote_to_served_s']} s, versions {swap['versions_seen']}"
        )
    for drill in drills:
        durability = drill["durability"]
        print(
            f"kill -9 one {drill['victim']} replica of {drill['replicas']} under load (8 clients, 15 s): "
            f"{drill['requests']} requests, {drill['errors']} errors ({drill['error_rate']:.2%}), "
            f"recovery {drill.get('recovery_s')} s, longest gap {drill['max_gap_s']} s; "
            f"acknowledged feedback {durability['acked']}, lost {durability['lost']}, "
            f"duplicated {durability['duplicated']}, listeners short of listens "
            f"{len(durability['users_missing_listens'])}"
        )
    print(
        json.dumps(
            {
                "results": {s: {str(c): r for c, r in v.items()} for s, v in results.items()},
                "swap": swap,
                "kill_drills": drills,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
