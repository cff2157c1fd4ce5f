"""Ingress deployment: the HTTP API (FastAPI) and the gRPC methods of the served app.

Where it sits: the front door. With direct ingress (services/app.py) this replica answers
HTTP and gRPC on its own ports; Serve's proxies also route ``/v1/*`` and the gRPC
``Recommend`` / ``Feedback`` methods (services/proto/encore.proto) here. Both transports
validate with the pydantic models of services/schemas.py and run the same
``RecommendationPipeline`` (services/core/request_pipeline.py), which calls the Embedder, Retriever and
Scorer deployments through their handles.

Why concurrent requests are batched here (``@serve.batch`` on ``_recommend_batched``):
every hop to another deployment costs about a millisecond of CPU however little it
carries; grouping the requests that arrive together pays each hop once per batch, which is
what lets three deployments keep up with a single in-process server on 2 cores.

HTTP error contract (never a 500 for bad input): unknown track -> 404 naming it;
malformed body, NaN/out-of-range feature, k out of range, exclude too long -> 422 with the
field; unknown request id -> 404; body over ``MAX_BODY_BYTES`` -> 413. gRPC answers
NOT_FOUND / INVALID_ARGUMENT with the same message. Admin actions need
``Authorization: Bearer <token>`` (the token is read from ``ENCORE_ADMIN_TOKEN``).
"""

import asyncio
import contextlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle

from rl.registry import ModelRegistry, RegistryError
from rl.songs.catalog import load_catalog
from rl.songs.embedding import ensure_song_embedding
from services.config import QUIET_LOGS, ServiceConfig
from services.core.feedback_journal import FeedbackSink
from services.core.neighbour_cache import build_neighbour_cache
from services.core.request_pipeline import CatalogTable, RecommendationPipeline, ServiceError
from services.core.scoring import ArmAssignment
from services.core.user_state import UserStateStore
from services.http_limits import BodySizeLimit
from services.proto import encore_pb2
from services.schemas import (
    MAX_BODY_BYTES,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    ModelsResponse,
    PromoteRequest,
    RecommendRequest,
    RecommendResponse,
)

api = FastAPI(
    title="Encore recommender",
    version="1",
    description="Next-song recommendations from an actor-critic policy over kNN candidates "
    "of a song VAE; feedback is logged for offline training.",
)
api.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)


def validation_errors(exc: RequestValidationError | ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as JSON-safe {field, message} (the input may hold NaN: not echoed)."""
    out = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        out.append({"field": ".".join(location) or "body", "message": str(error.get("msg", ""))})
    return out


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = validation_errors(exc)
    return JSONResponse(
        status_code=422,
        content={
            "detail": f"invalid {errors[0]['field']}: {errors[0]['message']}",
            "errors": errors,
        },
    )


@api.exception_handler(ServiceError)
async def _refused(request: Request, exc: ServiceError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"detail": exc.message, "field": exc.field})


def recommend_from_proto(message: Any) -> RecommendRequest:
    """gRPC RecommendRequest -> the validated pydantic model (raises ValidationError)."""
    body: dict[str, Any] = {"user_id": message.user_id, "exclude": list(message.exclude)}
    if message.track_id:
        body["track_id"] = message.track_id
    if message.HasField("features"):
        body["features"] = {
            f.name: getattr(message.features, f.name) for f in message.features.DESCRIPTOR.fields
        }
    if message.HasField("k"):
        body["k"] = message.k
    if message.mode:
        body["mode"] = message.mode
    if message.session_id:
        body["session_id"] = message.session_id
    return RecommendRequest.model_validate(body)


def recommend_to_proto(response: RecommendResponse) -> Any:
    fields = response.model_dump(exclude={"candidates", "value"})
    message = encore_pb2.RecommendResponse(**fields)
    for candidate in response.candidates:
        message.candidates.add(
            track_id=candidate.track_id,
            score=candidate.score,
            distance=candidate.distance,
            track_name=candidate.track_name or "",
            track_artist=candidate.track_artist or "",
        )
    if response.value is not None:
        message.value = response.value
    return message


@contextlib.contextmanager
def _grpc_status(context: RayServegRPCContext) -> Iterator[None]:
    """Answer bad input with a proper gRPC status instead of Serve's generic INTERNAL.

    Used as ``with _grpc_status(ctx): return ...`` followed by returning an empty message:
    a refused request falls through to that line with the code and details set.
    """
    try:
        yield
    except ValidationError as exc:
        error = validation_errors(exc)[0]
        context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
        context.set_details(f"invalid {error['field']}: {error['message']}")
    except ServiceError as exc:
        not_found = exc.status == 404
        context.set_code(
            grpc.StatusCode.NOT_FOUND if not_found else grpc.StatusCode.INVALID_ARGUMENT
        )
        context.set_details(exc.message)


@serve.deployment(
    logging_config=QUIET_LOGS,
    ray_actor_options={"num_cpus": 0.3},
    # One replica on purpose: it owns the pending decisions that feedback must find and the
    # per-user state (see services/core/user_state.py); the hops behind it scale out.
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
        embedding = ensure_song_embedding(
            self.config.embedding_uri, self.config.catalog_uri, progress=False
        )
        try:
            metadata = load_catalog(self.config.catalog_uri).metadata
        except (FileNotFoundError, OSError, ValueError):
            metadata = None  # names/durations are for display; serving does not need them
        catalog = CatalogTable.from_embedding(embedding.track_ids, embedding.latents, metadata)
        layout = self.config.layout
        self.registry = ModelRegistry(self.config.registry_uri)
        self.pipeline = RecommendationPipeline(
            layout=layout,
            catalog=catalog,
            store=UserStateStore(
                layout,
                default_taste=embedding.latents.mean(axis=0),
                max_users=self.config.max_users,
                max_pending=self.config.max_pending,
            ),
            sink=FeedbackSink(
                self.config.log_uri,
                self.config.journal_dir,
                flush_interval_s=self.config.flush_interval_s,
                fsync=self.config.fsync,
                k=layout.k,
                n_betas=layout.n_betas,
            ),
            embed=self._embed,
            retrieve=self._retrieve,
            score=self._score,
            arms=ArmAssignment(self.config.ab_arms),
            neighbour_cache=build_neighbour_cache(
                embedding.latents, embedding.track_ids, self.config.neighbour_cache_width
            ),
        )
        self._recommend_batched.set_max_batch_size(self.config.batch_max_size)  # type: ignore[attr-defined]
        self._recommend_batched.set_batch_wait_timeout_s(self.config.batch_wait_s)  # type: ignore[attr-defined]
        self._recommend_batched_grpc.set_max_batch_size(self.config.batch_max_size)  # type: ignore[attr-defined]
        self._recommend_batched_grpc.set_batch_wait_timeout_s(self.config.grpc_batch_wait_s)  # type: ignore[attr-defined]

    # -- the hops ---------------------------------------------------------------------
    async def _embed(self, raw: np.ndarray) -> np.ndarray:
        return await self.embedder.encode.remote(raw)

    async def _retrieve(self, latents: np.ndarray, k: int, excludes: list[list[str]]) -> Any:
        return await self.retriever.neighbours.remote((latents, k, excludes))

    async def _score(self, obs: np.ndarray, modes: list[str], arms: list[str]) -> Any:
        return await self.scorer.score.remote((obs, modes, arms))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, max_concurrent_batches=4)
    async def _recommend_batched(self, requests: list[RecommendRequest]) -> list[Any]:
        return await self.pipeline.recommend_batch(requests)

    # gRPC requests reach the replica one after another rather than together (measured:
    # batches of ~2 at concurrency 32 with the 2 ms wait that fills HTTP batches to 32), so
    # they get their own batcher with a longer wait (ServiceConfig.grpc_batch_wait_s).
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01, max_concurrent_batches=4)
    async def _recommend_batched_grpc(self, requests: list[RecommendRequest]) -> list[Any]:
        return await self.pipeline.recommend_batch(requests)

    async def _recommend(self, body: RecommendRequest, grpc: bool = False) -> RecommendResponse:
        batched = self._recommend_batched_grpc if grpc else self._recommend_batched
        result = await batched(body)
        if isinstance(result, ServiceError):
            raise result
        return result

    # -- HTTP -------------------------------------------------------------------------
    @api.post(
        "/v1/recommend", response_model=RecommendResponse, responses={404: {}, 413: {}, 422: {}}
    )
    async def recommend(self, body: RecommendRequest) -> Response:
        """Rank the kNN candidates of the song playing and pick the next one."""
        # Already a validated RecommendResponse: serialize it once instead of letting
        # FastAPI dump, re-validate and re-encode it (response_model stays for the docs).
        response = await self._recommend(body)
        return Response(response.model_dump_json(), media_type="application/json")

    @api.post(
        "/v1/feedback", response_model=FeedbackResponse, responses={404: {}, 413: {}, 422: {}}
    )
    async def feedback(self, body: FeedbackRequest) -> FeedbackResponse:
        """Log how the user responded to a recommendation (durable once acknowledged)."""
        return await self.pipeline.feedback(body)

    @api.get("/v1/health", response_model=HealthResponse)
    async def health(self) -> HealthResponse:
        described = await self.scorer.describe.remote()
        return HealthResponse(
            status="ok",
            model_version=described["version"],
            pending_requests=self.pipeline.store.n_pending,
            feedback=self.pipeline.sink.counts,
        )

    @api.get("/v1/models", response_model=ModelsResponse)
    async def models(self) -> ModelsResponse:
        """The version each answering Scorer replica serves, the registry, and refusals."""
        described = await asyncio.gather(*[self.scorer.describe.remote() for _ in range(4)])
        serving = {
            d["replica"]: {k: d[k] for k in ("version", "policy", "loaded_at")} for d in described
        }
        refusals = {(r["version"], r["at"]): r for d in described for r in d["refusals"]}
        versions, pointer = await asyncio.to_thread(self._registry_listing)
        return ModelsResponse(
            serving=serving,
            production_pointer=pointer,
            versions=versions,
            refusals=sorted(refusals.values(), key=lambda r: r["at"]),
        )

    def _registry_listing(self) -> tuple[list[dict], str | None]:
        try:
            entries = self.registry.list_versions()
            pointer = self.registry.production_version()
        except Exception:  # an unreadable registry must not take /v1/models down
            return [], None
        return [
            {"version": e.version, "algo": e.algo, "created_at": e.created_at, "metrics": e.metrics}
            for e in entries
        ], pointer

    @api.post("/v1/admin/promote", responses={401: {}, 403: {}, 409: {}})
    async def promote(
        self, body: PromoteRequest, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """Admin: point production at a registry version, then wait for the Scorer to swap."""
        token = self.config.admin_token
        if token is None:
            return JSONResponse(
                status_code=403,
                content={"detail": f"admin endpoints are off: set {self.config.admin_token_env}"},
            )
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse(status_code=401, content={"detail": "missing or wrong admin token"})
        try:
            await asyncio.to_thread(self.registry.promote, body.version)
        except RegistryError as exc:
            return JSONResponse(
                status_code=409, content={"detail": f"refused: {exc}", "field": "version"}
            )
        deadline = time.monotonic() + body.wait_s
        while True:
            described = await self.scorer.describe.remote()
            refused = [r for r in described["refusals"] if r["version"] == body.version]
            if described["version"] == body.version or refused or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        status = 200 if described["version"] == body.version else 409
        return JSONResponse(
            status_code=status,
            content={
                "promoted": body.version,
                "serving": described["version"],
                "refusal": refused[-1] if refused else None,
            },
        )

    # -- gRPC (methods named after the RPCs of services/proto/encore.proto) ---------------
    async def Recommend(self, request: Any, grpc_context: RayServegRPCContext) -> Any:  # noqa: N802
        with _grpc_status(grpc_context):
            body = recommend_from_proto(request)
            return recommend_to_proto(await self._recommend(body, grpc=True))
        return encore_pb2.RecommendResponse()

    async def Feedback(self, request: Any, grpc_context: RayServegRPCContext) -> Any:  # noqa: N802
        with _grpc_status(grpc_context):
            body = FeedbackRequest(
                request_id=request.request_id,
                track_id=request.track_id,
                listen_fraction=request.listen_fraction,
                liked=request.liked,
                skip_level=request.skip_level,
            )
            return encore_pb2.FeedbackResponse(**(await self.pipeline.feedback(body)).model_dump())
        return encore_pb2.FeedbackResponse()

    def __del__(self) -> None:
        # Graceful shutdown: everything journaled goes to parquet now (the journal would
        # be replayed by the next start anyway).
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            pipeline.sink.close()
