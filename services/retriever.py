"""Retriever deployment: query latents -> the k nearest catalog songs (rl/songs/retrieval.py).

Where it sits: between the song playing (its latent) and the Scorer. Exact kNN over the
embedding's latents with a per-query exclude set (the song itself, what the user asked to
exclude). ``@serve.batch`` merges concurrent ingress batches into one index query.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from rl.songs.embedding import ensure_song_embedding
from rl.songs.retrieval import KnnIndex
from services.config import QUIET_LOGS, ServiceConfig

Query = tuple[np.ndarray, int, list[list[str]]]
"""(B, D) query latents, k, B exclude lists."""
Answer = list[tuple[list[str], list[float]]]
"""Per query: candidate track ids and their distances (nearest first)."""


def neighbours(index: KnnIndex, latents: np.ndarray, k: int, excludes: list[list[str]]) -> Answer:
    """The core call, shared with the in-process baseline."""
    found = index.query(latents, k=k, exclude=[set(e) for e in excludes])
    answer = []
    for rows, ids, distances in zip(found.rows, found.track_ids, found.distances, strict=True):
        keep = rows >= 0
        answer.append((list(ids[keep]), distances[keep].astype(float).tolist()))
    return answer


@serve.deployment(
    logging_config=QUIET_LOGS,
    ray_actor_options={"num_cpus": 0.1},
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8},
    # Room for a full batch of concurrent callers (the default, 5, caps every batch at 5).
    max_ongoing_requests=16,
)
class Retriever:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = ServiceConfig.from_args(config)
        embedding = ensure_song_embedding(
            self.config.embedding_uri, self.config.catalog_uri, progress=False
        )
        self.index = KnnIndex(embedding.latents, embedding.track_ids.tolist())

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.001)
    async def neighbours(self, queries: list[Query]) -> list[Answer]:
        latents = np.concatenate([q[0] for q in queries], axis=0)
        k = max(q[1] for q in queries)
        excludes = [e for q in queries for e in q[2]]
        merged = neighbours(self.index, latents, k, excludes)
        out, start = [], 0
        for q in queries:
            out.append(merged[start : start + len(q[0])])
            start += len(q[0])
        return out
