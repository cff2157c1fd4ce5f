"""Embedder deployment: raw audio features -> song latent (the VAE encoder, rl/songs/embedding.py).

Where it sits: first hop of a recommendation for a song that is not in the catalog (a
catalog track's latent is a lookup the ingress does itself). Calls from the ingress are
already batches; ``@serve.batch`` merges concurrent batches into one encoder pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from services.config import ServiceConfig, batching_deployment


@serve.deployment(**batching_deployment(num_cpus=0.1))
class Embedder:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = ServiceConfig.from_args(config)
        self.embedding = self.config.song_embedding()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.001)
    async def encode(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Each item: (b, 11) raw features -> (b, D) latents."""
        sizes = [len(batch) for batch in batches]
        latents = self.embedding.encode(np.concatenate(batches, axis=0)).astype(np.float32)
        return np.split(latents, np.cumsum(sizes)[:-1])
