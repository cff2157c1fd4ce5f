"""The served app: ``build_app(args) -> Application`` and helpers to start it locally.

Where it sits: ``serve_config.yaml`` names ``services.app:build_app`` as its import path
(``serve run serve_config.yaml`` / ``serve deploy serve_config.yaml``); ``encore serve``,
the demo stage, the tests and the benchmark call ``start_app``. The graph:

    client ------------- HTTP :30000 / gRPC :40000 (direct ingress) --+
    HTTP proxy :8000 / gRPC proxy :9000 -----------------------------+-> Ingress
    Ingress --(batched)--> Embedder (raw features only)
            --(batched)--> Retriever (kNN; only for raw features or exclude lists
                           the ingress's neighbour table cannot answer)
            --(batched)--> Scorer (policy, hot-swapped)

A request for a catalog track makes one hop behind the ingress (the Scorer): every hop
costs about 1-2 ms of CPU in Serve's machinery on each side, far more than the kNN lookup
it would carry (benchmarks/bench_serving.py prints CPU per request per process).

Direct ingress (Ray Serve's throughput-optimized mode, ``SERVE_FAST_PATH_ENV``): the
Ingress replica itself listens for HTTP and gRPC, so a request skips the proxy actor and
its actor call into the replica. On 2 cores that hop cost ~3-4 ms of CPU in the proxy and
~3 ms more in the replica per request, while the whole in-process app costs under 1 ms;
it is what capped the proxied app at ~0.2x the baseline's throughput (README, issue 5).
The proxies keep serving on the configured ports, for clients that need one fixed address.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import HTTPOptions, gRPCOptions

from services.config import QUIET_LOGS, ServiceConfig
from services.embedder import Embedder
from services.ingress import Ingress
from services.retriever import Retriever
from services.scorer import Scorer

APP_NAME = "encore"
GRPC_SERVICER = "services.proto.encore_pb2_grpc.add_RecommenderServicer_to_server"

SERVE_FAST_PATH_ENV = {
    # Ray Serve's documented throughput mode: direct ingress (the Ingress replica listens
    # itself, from port 30000 for HTTP and 40000 for gRPC), gRPC between deployments, user
    # code on the replica's own event loop, buffered request logs.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # A draining direct-ingress replica waits this long for a load balancer to stop
    # sending (Serve's default is 30 s). Locally nothing balances in front of it.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
"""Environment of the Ray that serves the app. Serve reads it when its processes start, so
it must be in the environment of ``ray start`` on a cluster (cluster.yaml leaves it off:
its proof serves through the proxies) or of the process that calls ``ray.init`` for a
local Ray (``use_serve_fast_path``). Set
``RAY_SERVE_THROUGHPUT_OPTIMIZED=0`` to serve through the proxies only."""


def use_serve_fast_path(environ: MutableMapping[str, str] = os.environ) -> None:
    """Put ``SERVE_FAST_PATH_ENV`` in ``environ`` before a local ``ray.init``; values the
    user already set win."""
    for name, value in SERVE_FAST_PATH_ENV.items():
        environ.setdefault(name, value)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The Serve application from ``args`` (the fields of ``ServiceConfig``)."""
    validated = ServiceConfig.from_args(args)  # validated once, here, in the driver
    config = validated.to_dict()
    # serve.deployment turns the classes into Deployments (their .bind is not in the stubs).
    deployments: Any = (Ingress, Embedder, Retriever, Scorer)
    ingress, embedder, retriever, scorer = deployments
    ingress = ingress.options(
        autoscaling_config={
            "min_replicas": validated.ingress_min_replicas,
            "max_replicas": validated.ingress_max_replicas,
            "target_ongoing_requests": 64,
        }
    )
    scorer = scorer.options(
        autoscaling_config={
            "min_replicas": validated.scorer_min_replicas,
            "max_replicas": max(2, validated.scorer_min_replicas),
            "target_ongoing_requests": 8,
        }
    )
    return ingress.bind(embedder.bind(config), retriever.bind(config), scorer.bind(config), config)


def start_app(
    config: ServiceConfig | dict[str, Any] | None = None,
    http_port: int = 8000,
    grpc_port: int = 9000,
    host: str = "127.0.0.1",
) -> dict[str, str]:
    """Start Serve (HTTP + gRPC proxies) in the connected Ray cluster and run the app.

    Returns the URLs: "http", "docs", "grpc" (the proxies) and, when Ray runs with direct
    ingress (``use_serve_fast_path``), "http_direct" and "grpc_direct" (the Ingress
    replica's own ports, the fast path). The caller owns Ray (``ray.init``) and shuts down
    with ``serve.shutdown()``; the ingress flushes its feedback journal to parquet then.
    """
    if isinstance(config, ServiceConfig):
        config = config.to_dict()
    serve.start(
        logging_config=QUIET_LOGS,
        http_options=HTTPOptions(host=host, port=http_port),
        grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=[GRPC_SERVICER]),
    )
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")
    urls = {
        "http": f"http://{host}:{http_port}",
        "docs": f"http://{host}:{http_port}/docs",
        "grpc": f"{host}:{grpc_port}",
    }
    loopback = host if host in ("127.0.0.1", "localhost") else None
    direct = direct_ingress_urls(APP_NAME, loopback_host=loopback)
    if direct["http"]:
        urls["http_direct"] = direct["http"][0]
    if direct["grpc"]:
        urls["grpc_direct"] = direct["grpc"][0]
    return urls


def direct_ingress_urls(
    app_name: str = APP_NAME, loopback_host: str | None = "127.0.0.1"
) -> dict[str, list[str]]:
    """Where each Ingress replica answers itself when Serve runs with direct ingress.

    With direct ingress on (``SERVE_FAST_PATH_ENV``), every Ingress replica also listens
    on its own HTTP and gRPC ports (Serve allocates them from 30000 and 40000); the
    proxies keep answering on the configured ports. Returns {"http": [url, ...],
    "grpc": [host:port, ...]}, both empty when direct ingress is off. The replicas bind the
    host of ``http_options`` (loopback by default, see serve_config.yaml), so on a single
    machine the addresses use ``loopback_host`` instead of the node IP the controller
    reports; pass None to keep the node IPs (a cluster whose HTTP host is 0.0.0.0).
    """
    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("Serve is not running in this Ray cluster (call start_app first)")
    controller = client._controller
    groups = ray.get(controller.get_target_groups.remote(app_name))
    urls: dict[str, list[str]] = {"http": [], "grpc": []}
    for group in groups:
        protocol = str(getattr(group.protocol, "value", group.protocol)).lower()
        for target in group.targets:
            if target.name.startswith("SERVE_PROXY") or "proxy" in target.name.lower():
                continue  # a proxy, not an ingress replica
            address = f"{loopback_host or target.ip}:{target.port}"
            if protocol == "http":
                urls["http"].append(f"http://{address}")
            elif protocol == "grpc":
                urls["grpc"].append(address)
    return urls
