"""The same models answering from one process: a plain FastAPI app without Ray Serve.

Where it sits: the benchmark's baseline (benchmarks/bench_serving.py runs it under uvicorn
beside the Serve app) and a way to debug the pipeline without Ray. It runs the same
``RecommendationPipeline`` with the Embedder, Retriever and Scorer cores called in-process
(no hops, no batching across requests) and exposes the same ``/v1/recommend`` and
``/v1/feedback``. Run: ``ENCORE_SERVICE_ARGS='{"data_root": "data"}' uvicorn --factory
services.inprocess:create_app``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from fastapi import FastAPI

from rl.songs.catalog import load_catalog
from rl.songs.embedding import ensure_song_embedding
from rl.songs.retrieval import KnnIndex
from services.config import ServiceConfig
from services.core.feedback_journal import FeedbackSink
from services.core.neighbour_cache import build_neighbour_cache
from services.core.request_pipeline import CatalogTable, RecommendationPipeline, ServiceError
from services.core.scoring import ArmAssignment
from services.core.user_state import UserStateStore
from services.retriever import neighbours
from services.schemas import FeedbackRequest, FeedbackResponse, RecommendRequest, RecommendResponse
from services.scorer import build_scoring_core


def build_pipeline(config: ServiceConfig) -> RecommendationPipeline:
    embedding = ensure_song_embedding(config.embedding_uri, config.catalog_uri, progress=False)
    index = KnnIndex(embedding.latents, embedding.track_ids.tolist())
    core = build_scoring_core(config, embedding.latents, embedding.track_ids)
    core.slot.sync()
    try:
        metadata = load_catalog(config.catalog_uri).metadata
    except (FileNotFoundError, OSError, ValueError):
        metadata = None

    async def embed(raw: np.ndarray) -> np.ndarray:
        return embedding.encode(raw).astype(np.float32)

    async def retrieve(latents: np.ndarray, k: int, excludes: list[list[str]]) -> Any:
        return neighbours(index, latents, k, excludes)

    async def score(obs: np.ndarray, modes: list[str], arms: list[str]) -> Any:
        return core.score(obs, modes, arms)

    layout = config.layout
    return RecommendationPipeline(
        layout=layout,
        catalog=CatalogTable.from_embedding(embedding.track_ids, embedding.latents, metadata),
        store=UserStateStore(
            layout, embedding.latents.mean(axis=0), max_pending=config.max_pending
        ),
        sink=FeedbackSink(
            config.log_uri,
            config.journal_dir,
            config.flush_interval_s,
            fsync=config.fsync,
            k=layout.k,
            n_betas=layout.n_betas,
        ),  # fmt: skip
        embed=embed,
        retrieve=retrieve,
        score=score,
        arms=ArmAssignment(config.ab_arms),
        neighbour_cache=build_neighbour_cache(
            embedding.latents, embedding.track_ids, config.neighbour_cache_width
        ),
    )


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    """The in-process app; config from ``ENCORE_SERVICE_ARGS`` (JSON) when not given."""
    if config is None:
        config = ServiceConfig.from_args(json.loads(os.environ.get("ENCORE_SERVICE_ARGS", "{}")))
    pipeline = build_pipeline(config)
    app = FastAPI(title="Encore recommender (in-process baseline)")

    @app.exception_handler(ServiceError)
    async def _refused(request: Any, exc: ServiceError) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse(
            status_code=exc.status, content={"detail": exc.message, "field": exc.field}
        )

    @app.post("/v1/recommend", response_model=RecommendResponse)
    async def recommend(body: RecommendRequest) -> Any:
        (result,) = await pipeline.recommend_batch([body])
        if isinstance(result, ServiceError):
            raise result
        return result

    @app.post("/v1/feedback", response_model=FeedbackResponse)
    async def feedback(body: FeedbackRequest) -> Any:
        return await pipeline.feedback(body)

    @app.on_event("shutdown")
    def _close() -> None:
        pipeline.sink.close()

    return app
