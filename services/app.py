"""The served app: ``build_app(args) -> Application`` and a helper to start it locally.

Where it sits: ``serve_config.yaml`` names ``services.app:build_app`` as its import path
(``serve run serve_config.yaml`` / ``serve deploy serve_config.yaml``); ``encore serve``,
the demo stage, the tests and the benchmark call ``start_app``. The graph:

    HTTP proxy / gRPC proxy -> Ingress --(batched)--> Embedder (raw features only)
                                        --(batched)--> Retriever (kNN; only for raw features
                                                       or exclude lists the ingress's
                                                       neighbour table cannot answer)
                                        --(batched)--> Scorer (policy, hot-swapped)

A request for a catalog track makes one hop behind the ingress (the Scorer): every hop
costs about 1-2 ms of CPU in Serve's machinery on each side, far more than the kNN lookup
it would carry (benchmarks/bench_serving.py prints CPU per request per process).
"""

from __future__ import annotations

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


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The Serve application from ``args`` (the fields of ``ServiceConfig``)."""
    config = ServiceConfig.from_args(args).to_dict()  # validated once, here, in the driver
    # serve.deployment turns the classes into Deployments (their .bind is not in the stubs).
    deployments: Any = (Ingress, Embedder, Retriever, Scorer)
    ingress, embedder, retriever, scorer = deployments
    return ingress.bind(embedder.bind(config), retriever.bind(config), scorer.bind(config), config)


def start_app(
    config: ServiceConfig | dict[str, Any] | None = None,
    http_port: int = 8000,
    grpc_port: int = 9000,
    host: str = "127.0.0.1",
) -> dict[str, str]:
    """Start Serve (HTTP + gRPC proxies) in the connected Ray cluster and run the app.

    Returns the URLs. The caller owns Ray (``ray.init``) and shuts down with
    ``serve.shutdown()``; the ingress flushes its feedback journal to parquet then.
    """
    if isinstance(config, ServiceConfig):
        config = config.to_dict()
    serve.start(
        logging_config=QUIET_LOGS,
        http_options=HTTPOptions(host=host, port=http_port),
        grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=[GRPC_SERVICER]),
    )
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")
    return {
        "http": f"http://{host}:{http_port}",
        "docs": f"http://{host}:{http_port}/docs",
        "grpc": f"{host}:{grpc_port}",
    }
