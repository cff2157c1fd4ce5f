"""``encore serve``: run the served app locally (Ray Serve, HTTP + gRPC) until Ctrl-C.
``encore serve-demo``: the serving stage of the demo on its own (start, request, feedback, stop).

Starts a local Ray (2 CPUs by default), deploys services/app.py with the embedded defaults
(embedding, registry, service log under ./data), prints the URLs and keeps serving; the
Scorer follows the registry's production pointer, so `encore promote VERSION` in another
shell swaps the policy in without a restart. For a cluster use `serve deploy serve_config.yaml`.
"""

from __future__ import annotations

import argparse
import time

from rl import paths
from rl.cli.config_options import config_options
from rl.cli.options import add_catalog_option, add_command, add_ray_cpus_option


def register(subparsers: argparse._SubParsersAction) -> None:
    serve_parser = add_command(subparsers, "serve", run_serve, description=__doc__)
    add_app_options(serve_parser)
    add_ray_cpus_option(serve_parser)
    serve_parser.add_argument(
        "--for-seconds",
        type=float,
        default=None,
        help="stop after this long (default: until Ctrl-C)",
    )
    serve_parser.add_argument(
        "--redis",
        action="store_true",
        help="keep listeners' state in a redis-server started here (under <data>/serving/redis), "
        "shared by --ingress-replicas Ingress replicas (default: in-process, one replica)",
    )
    serve_parser.add_argument(
        "--ingress-replicas", type=int, default=2, help="Ingress replicas with --redis (default 2)"
    )
    serve_parser.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        help="Ray's Prometheus metrics port (default 8080)",
    )

    demo_parser = add_command(subparsers, "serve-demo", run_serve_demo)
    add_app_options(demo_parser)


def add_app_options(parser: argparse.ArgumentParser) -> None:
    """Where the served app's data lives, its ports, and the policy's k."""
    parser.add_argument(
        "--data", default=None, help=f"generated-data root (default: {paths.data_dir()})"
    )
    add_catalog_option(parser, " (song names and durations)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default: 8000)")
    parser.add_argument("--grpc-port", type=int, default=9000, help="gRPC port (default: 9000)")
    config_options(
        parser, "rl.decision.observation:ObservationLayout", attr="layout", only=("k",),
        flags={"k": ("-k", "--k")}, title="policy",
    )  # fmt: skip


def run_serve(args: argparse.Namespace) -> int:
    """start the served app locally (HTTP + gRPC) and print its URLs"""
    import ray
    from ray import serve

    from services.app import start_app, use_serve_fast_path
    from services.config import ServiceConfig

    settings = {"data_root": args.data or paths.data_dir(), "k": args.k}
    if args.catalog:
        settings["catalog_uri"] = args.catalog
    redis = None
    if args.redis:
        from services.redis_server import start_redis_server

        redis = start_redis_server(f"{settings['data_root']}/serving/redis")
        replicas = max(1, args.ingress_replicas)
        settings.update(
            user_store=redis.url, ingress_min_replicas=replicas, ingress_max_replicas=replicas
        )
    config = ServiceConfig.from_args(settings)
    use_serve_fast_path()  # direct ingress; RAY_SERVE_THROUGHPUT_OPTIMIZED=0 turns it off
    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        include_dashboard=False,
        _metrics_export_port=args.metrics_port,
    )
    try:
        urls = start_app(config, http_port=args.http_port, grpc_port=args.grpc_port)
        print(f"HTTP  {urls['http']}/v1/recommend  (OpenAPI docs: {urls['docs']})")
        print(f"gRPC  {urls['grpc']}  (services/proto/encore.proto, metadata application=encore)")
        if "http_direct" in urls:
            print(
                f"fast path, no proxy hop: HTTP {urls['http_direct']}/v1/recommend, "
                f"gRPC {urls.get('grpc_direct')}"
            )
        print(f"feedback log: {config.log_uri}   registry: {config.registry_uri}")
        print(f"user state: {config.user_store} ({config.ingress_max_replicas} Ingress replica(s))")
        print(
            f"metrics (Prometheus): http://127.0.0.1:{args.metrics_port}/metrics  "
            "(ray_encore_*; Grafana dashboard: services/grafana_dashboard.json)"
        )
        print("Ctrl-C to stop", flush=True)
        deadline = None if args.for_seconds is None else time.monotonic() + args.for_seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
        if redis is not None:
            redis.stop()
    return 0


def run_serve_demo(args: argparse.Namespace) -> int:
    """start the app, send real requests and feedback, show the log, stop"""
    from services.demo_stage import run_serving_demo

    summary = run_serving_demo(
        args.data or paths.data_dir(),
        args.catalog,
        k=args.k,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
    )
    return 0 if summary["rows_landed"] == len(summary["feedback"]) else 1
