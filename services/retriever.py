"""Retriever deployment: query latents -> the k nearest catalog songs (rl/songs/retrieval.py).

Where it sits: between the song playing (its latent) and the Scorer. kNN over the
embedding's latents with a per-query exclude set (the song itself, what the user asked to
exclude). ``@serve.batch`` merges concurrent ingress batches into one index query.

Which index: the production version of the index registry (``index_uri``; built offline by
``encore index build``, promoted by ``encore index promote``): exact, or faiss IVF / HNSW
checked at recall@k >= 0.99 against exact when it was built. Until one is promoted, an
exact KD-tree over the embedding, built at start (the embedded default). Hot-swap without
restarts, as the Scorer does for policies (rl/songs/index_slot.py): a watcher thread polls
the pointer, loads and verifies a new version off the request path and swaps it in with one
assignment; a batch reads the slot's index once, so requests in flight during a swap finish
on the index they started with. ``reconfigure`` (``user_config``) pins a version
(``"embedded"`` for the default) or changes the poll interval without a restart.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from ray import serve

from rl.songs.index_registry import catalog_fingerprint
from rl.songs.index_slot import IndexSlot
from rl.songs.retrieval import KnnIndex
from services.config import ServiceConfig, batching_deployment

Query = tuple[np.ndarray, int, list[list[str]]]
"""(B, D) query latents, k, B exclude lists."""
Answer = list[tuple[list[str], list[float]]]
"""Per query: candidate track ids and their distances (nearest first)."""

logger = logging.getLogger("ray.serve")


def neighbours(index: KnnIndex, latents: np.ndarray, k: int, excludes: list[list[str]]) -> Answer:
    """The core call, shared with the in-process baseline."""
    found = index.query(latents, k=k, exclude=[set(e) for e in excludes])
    answer = []
    for rows, ids, distances in zip(found.rows, found.track_ids, found.distances, strict=True):
        keep = rows >= 0
        answer.append((list(ids[keep]), distances[keep].astype(float).tolist()))
    return answer


@serve.deployment(**batching_deployment(num_cpus=0.1))
class Retriever:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = ServiceConfig.from_args(config)
        embedding = self.config.song_embedding()
        self.slot = IndexSlot(
            KnnIndex(embedding.latents, embedding.track_ids.tolist()),
            self.config.index_uri,
            catalog_fingerprint(embedding.latents, embedding.track_ids),
        )
        self._sync_and_report()  # serve the production index from the first request
        self.poll_interval_s = self.config.poll_interval_s
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="index-watch", daemon=True)
        self._watcher.start()

    def _sync_and_report(self) -> None:
        refused = self.slot.sync()
        if refused:
            logger.warning(
                "Retriever refused an index (%s); serving %s", refused, self.slot.active.version
            )

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self._sync_and_report()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``user_config``: {"pinned_index_version": str | null, "poll_interval_s": float}."""
        self.slot.pinned_version = user_config.get("pinned_index_version") or None
        self.poll_interval_s = float(user_config.get("poll_interval_s", self.poll_interval_s))
        threading.Thread(target=self._sync_and_report, daemon=True).start()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.001)
    async def neighbours(self, queries: list[Query]) -> list[Answer]:
        index = self.slot.active.index  # read once: a swap mid-batch does not split it
        latents = np.concatenate([q[0] for q in queries], axis=0)
        k = max(q[1] for q in queries)
        excludes = [e for q in queries for e in q[2]]
        merged = neighbours(index, latents, k, excludes)
        out, start = [], 0
        for q in queries:
            out.append(merged[start : start + len(q[0])])
            start += len(q[0])
        return out

    def describe(self) -> dict[str, Any]:
        """The index this replica serves, and any versions it refused."""
        active = self.slot.active
        return {
            "replica": serve.get_replica_context().replica_tag,
            "index_version": active.version,
            "kind": active.kind,
            "songs": len(active.index),
            "loaded_at": active.loaded_at,
            "pinned_version": self.slot.pinned_version,
            "refusals": list(self.slot.refusals),
        }

    def __del__(self) -> None:
        self._stop.set()
