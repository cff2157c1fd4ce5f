"""The same models answering from one process: a plain FastAPI app without Ray Serve.

Where it sits: the benchmark's baseline (benchmarks/bench_serving.py runs it under uvicorn
beside the Serve app), the request pipeline's unit tests, and a way to debug the pipeline
without Ray. It runs the same ``RecommendationPipeline``, assembled by the same
``services.assembly.assemble_pipeline`` as the Serve ingress, with the Embedder, Retriever
and Scorer cores called in-process (no hops, no batching across requests), and exposes the
same ``/v1/recommend`` and ``/v1/feedback`` with the same error answers. Run:
``ENCORE_SERVICE_ARGS='{"data_root": "data"}' uvicorn --factory services.inprocess:create_app``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from fastapi import FastAPI

from rl.songs.retrieval import KnnIndex
from services.assembly import assemble_pipeline, load_served_songs
from services.config import ServiceConfig
from services.core.request_pipeline import RecommendationPipeline, ServiceError
from services.errors import install_error_handlers
from services.retriever import neighbours
from services.schemas import FeedbackRequest, FeedbackResponse, RecommendRequest, RecommendResponse
from services.scorer import build_scoring_core


def build_pipeline(config: ServiceConfig) -> RecommendationPipeline:
    """The pipeline with the Embedder, Retriever and Scorer cores as local calls."""
    embedding, catalog = load_served_songs(config)
    index = KnnIndex(embedding.latents, embedding.track_ids.tolist())
    core = build_scoring_core(config, embedding.latents, embedding.track_ids)
    core.slot.sync()

    async def embed(raw: np.ndarray) -> np.ndarray:
        return embedding.encode(raw).astype(np.float32)

    async def retrieve(latents: np.ndarray, k: int, excludes: list[list[str]]) -> Any:
        return neighbours(index, latents, k, excludes)

    async def score(obs: np.ndarray, modes: list[str], arms: list[str]) -> Any:
        return core.score(obs, modes, arms)

    return assemble_pipeline(config, catalog, embed=embed, retrieve=retrieve, score=score)


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    """The in-process app; config from ``ENCORE_SERVICE_ARGS`` (JSON) when not given."""
    if config is None:
        config = ServiceConfig.from_args(json.loads(os.environ.get("ENCORE_SERVICE_ARGS", "{}")))
    pipeline = build_pipeline(config)
    app = FastAPI(title="Encore recommender (in-process baseline)")
    install_error_handlers(app)

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
