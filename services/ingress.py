"""Ingress deployment: the HTTP API (FastAPI) and the gRPC methods of the served app.

Where it sits: the front door. With direct ingress (services/app.py) this replica answers
HTTP and gRPC on its own ports; Serve's proxies also route ``/v1/*`` and the gRPC
``Recommend`` / ``Feedback`` methods (services/proto/encore.proto) here. Both transports
validate with the pydantic models of services/schemas.py and run the same
``RecommendationPipeline`` (services/core/request_pipeline.py, assembled by
services/assembly.py), which calls the Embedder, Retriever and Scorer deployments through
their handles. Error answers: services/errors.py; proto conversion:
services/proto_convert.py; the model endpoints: services/admin.py.

Why concurrent requests are batched here (``@serve.batch`` on ``_recommend_batched``):
every hop to another deployment costs about a millisecond of CPU however little it
carries; grouping the requests that arrive together pays each hop once per batch, which is
what lets three deployments keep up with a single in-process server on 2 cores.
"""

from typing import Any

import grpc
import numpy as np
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle

from rl.registry import ModelRegistry
from services.admin import ModelAdmin, check_admin_token
from services.assembly import assemble_pipeline, load_served_songs
from services.config import QUIET_LOGS, ServiceConfig
from services.core.batch_wait import LoneRequestWait
from services.core.request_pipeline import ServiceError
from services.errors import grpc_status, install_error_handlers
from services.http_limits import BodySizeLimit
from services.load_shedding import InFlight, ShedOverload
from services.metrics import ServeMetrics
from services.proto import encore_pb2
from services.proto_convert import feedback_from_proto, recommend_from_proto, recommend_to_proto
from services.room import room
from services.schemas import (
    ERROR_RESPONSES,
    MAX_BODY_BYTES,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    ModelsResponse,
    PromoteRequest,
    RecommendRequest,
    RecommendResponse,
    UserResponse,
)
from services.user_view import user_view

api = FastAPI(
    title="Encore recommender",
    version="1",
    description="Next-song recommendations from an actor-critic policy over kNN candidates "
    "of a song VAE; feedback is logged for offline training.",
)
api.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
_REPLICA: dict[str, InFlight] = {}
"""This replica's in-flight counter (one replica per process), made by its constructor."""
api.add_middleware(ShedOverload, get_in_flight=lambda: _REPLICA.get("in_flight"))
install_error_handlers(api)
api.include_router(room)  # the listening room at / and its catalog search (services/room.py)


def _errors_and(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    """The error responses every endpoint documents, plus this endpoint's own ``status``."""
    return {**ERROR_RESPONSES, status: {"model": ErrorResponse, "description": description}}


def document_served_k(app: FastAPI, k: int) -> None:
    """The OpenAPI schema states the served policy's k as ``k``'s maximum (the request
    model allows up to ``MAX_K`` for any policy; this replica refuses more than its own)."""
    app.openapi_schema = None
    schema = app.openapi()
    request = schema["components"]["schemas"]["RecommendRequest"]["properties"]["k"]
    request["maximum"] = k
    request["description"] = f"candidates to rank, at most the served policy's k = {k}"
    if request.get("default", 1) > k:
        request["default"] = k


@serve.deployment(
    logging_config=QUIET_LOGS,
    ray_actor_options={"num_cpus": 0.3},
    # One replica by default: with the in-process user store it owns the pending decisions
    # feedback must find. With a shared store (Redis) it is stateless and scales out
    # (ServiceConfig.ingress_max_replicas; services/app.py sets these per config).
    autoscaling_config={"min_replicas": 1, "max_replicas": 1, "target_ongoing_requests": 64},
    max_ongoing_requests=256,
)
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        embedder: DeploymentHandle,
        retriever: DeploymentHandle,
        scorer: DeploymentHandle,
        config: dict[str, Any],
    ) -> None:
        self.config = ServiceConfig.from_args(config)
        self.embedder, self.retriever, self.scorer = embedder, retriever, scorer
        _, catalog = load_served_songs(self.config)
        self.pipeline = assemble_pipeline(
            self.config, catalog, embed=self._embed, retrieve=self._retrieve, score=self._score
        )
        self.admin = ModelAdmin(ModelRegistry(self.config.registry_uri), self._describe)
        self.metrics = ServeMetrics(self.pipeline.store.kind)
        self.pipeline.observer = self.metrics
        self.in_flight = InFlight(self.config.shed_queue_length, self.metrics.shed_request)
        _REPLICA["in_flight"] = self.in_flight
        document_served_k(api, self.config.k)
        for batched, wait_s in (
            (self._recommend_batched, self.config.batch_wait_s),
            (self._recommend_batched_grpc, self.config.grpc_batch_wait_s),
        ):
            batched.set_max_batch_size(self.config.batch_max_size)  # type: ignore[attr-defined]
            batched.set_batch_wait_timeout_s(wait_s)  # type: ignore[attr-defined]
        # A lone request skips the batch wait (services/core/batch_wait.py); HTTP, gRPC.
        self.batch_waits = [
            LoneRequestWait(wait_s, self.config.skip_lone_batch_wait)
            for wait_s in (self.config.batch_wait_s, self.config.grpc_batch_wait_s)
        ]

    # -- the hops ---------------------------------------------------------------------
    async def _embed(self, raw: np.ndarray) -> np.ndarray:
        return await self.embedder.encode.remote(raw)

    async def _retrieve(self, latents: np.ndarray, k: int, excludes: list[list[str]]) -> Any:
        return await self.retriever.neighbours.remote((latents, k, excludes))

    async def _score(self, obs: np.ndarray, modes: list[str], arms: list[str]) -> Any:
        return await self.scorer.score.remote((obs, modes, arms))

    async def _describe(self) -> dict[str, Any]:
        return await self.scorer.describe.remote()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, max_concurrent_batches=4)
    async def _recommend_batched(self, requests: list[RecommendRequest]) -> list[Any]:
        self.batch_waits[0].observe(len(requests))
        return await self.pipeline.recommend_batch(requests)

    # gRPC requests reach the replica one after another rather than together (measured:
    # batches of ~2 at concurrency 32 with the 2 ms wait that fills HTTP batches to 32), so
    # they get their own batcher with a longer wait (ServiceConfig.grpc_batch_wait_s).
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01, max_concurrent_batches=4)
    async def _recommend_batched_grpc(self, requests: list[RecommendRequest]) -> list[Any]:
        self.batch_waits[1].observe(len(requests))
        return await self.pipeline.recommend_batch(requests)

    async def _recommend(self, body: RecommendRequest, grpc: bool = False) -> RecommendResponse:
        batched = self._recommend_batched_grpc if grpc else self._recommend_batched
        wait_s = self.batch_waits[grpc].wait_for(self.in_flight.current)
        batched.set_batch_wait_timeout_s(wait_s)  # type: ignore[attr-defined]
        result = await batched(body)
        if isinstance(result, ServiceError):
            raise result
        return result

    # -- HTTP -------------------------------------------------------------------------
    @api.post(
        "/v1/recommend",
        response_model=RecommendResponse,
        responses=_errors_and(503, "overloaded; retry after Retry-After"),
    )
    async def recommend(self, body: RecommendRequest) -> Response:
        """Rank the kNN candidates of the song playing and pick the next one."""
        # Already a validated RecommendResponse: serialize it once instead of letting
        # FastAPI dump, re-validate and re-encode it (response_model stays for the docs).
        response = await self._recommend(body)
        return Response(response.model_dump_json(), media_type="application/json")

    @api.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        responses=_errors_and(409, "the track is not the request's pick"),
    )
    async def feedback(self, body: FeedbackRequest) -> FeedbackResponse:
        """Log how the user responded to a recommendation (durable once acknowledged)."""
        return await self.pipeline.feedback(body)

    @api.get("/v1/health", response_model=HealthResponse)
    async def health(self) -> HealthResponse:
        described = await self._describe()
        store = await self.pipeline.store.stats()
        return HealthResponse(
            status="ok",
            model_version=described["version"],
            pending_requests=store.get("pending"),
            feedback=self.pipeline.sink.counts,
            user_store=store,
        )

    @api.get(
        "/v1/users/{user_id}",
        response_model=UserResponse,
        responses={404: {"model": ErrorResponse, "description": "unknown listener"}},
    )
    async def user(self, user_id: str) -> UserResponse:
        """The listener's state as the service sees it: taste, relationships, recent decisions."""
        return await user_view(self.pipeline, user_id)

    @api.get("/v1/models", response_model=ModelsResponse)
    async def models(self) -> ModelsResponse:
        """The version each answering Scorer replica serves, the registry, and refusals."""
        return await self.admin.models()

    @api.post(
        "/v1/admin/promote",
        responses={
            status: {"model": ErrorResponse, "description": description}
            for status, description in (
                (401, "missing or wrong admin token"),
                (403, "admin endpoints are off"),
                (409, "the version was refused"),
                (422, "invalid body"),
            )
        },
    )
    async def promote(
        self, body: PromoteRequest, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """Admin: point production at a registry version, then wait for the Scorer to swap."""
        denied = check_admin_token(
            self.config.admin_token, authorization, self.config.admin_token_env
        )
        if denied is not None:
            return JSONResponse(status_code=denied[0], content={"detail": denied[1]})
        status, content = await self.admin.promote(body.version, body.wait_s)
        return JSONResponse(status_code=status, content=content)

    # -- gRPC (methods named after the RPCs of services/proto/encore.proto) ---------------
    async def Recommend(self, request: Any, grpc_context: RayServegRPCContext) -> Any:  # noqa: N802
        if not self.in_flight.try_enter("grpc"):
            grpc_context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            grpc_context.set_details(self.in_flight.refusal())
            return encore_pb2.RecommendResponse()
        try:
            with grpc_status(grpc_context):
                body = recommend_from_proto(request)
                return recommend_to_proto(await self._recommend(body, grpc=True))
            return encore_pb2.RecommendResponse()
        finally:
            self.in_flight.leave()

    async def Feedback(self, request: Any, grpc_context: RayServegRPCContext) -> Any:  # noqa: N802
        with grpc_status(grpc_context):
            body = feedback_from_proto(request)
            return encore_pb2.FeedbackResponse(**(await self.pipeline.feedback(body)).model_dump())
        return encore_pb2.FeedbackResponse()

    def __del__(self) -> None:
        # Graceful shutdown: everything journaled goes to parquet now (the journal would
        # be replayed by the next start anyway).
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            pipeline.sink.close()
