"""Precomputed kNN candidates of every catalog song, so most requests skip the Retriever hop.

Where it sits: the ingress (services/ingress.py) and the in-process baseline build one at
startup from the embedding's latents, and ``RecommendationPipeline`` answers a catalog
track's candidates from it. Only requests it cannot answer exactly (raw features, or an
exclude list that removes too many of a song's cached neighbours) go to the Retriever
deployment. The simulator does the same (rl/simulator/corpus.py ``neighbour_table``).

Why it is exact: the table holds each song's ``width`` nearest other songs in order. After
dropping the excluded ones, if at least ``k`` remain they are the true top-k of the
non-excluded catalog (anything outside the table is no nearer than its last entry); when
fewer remain the lookup answers ``None`` and the caller asks the Retriever.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from rl.songs.retrieval import KnnIndex


class NeighbourCache:
    """Each catalog song's ``width`` nearest other songs (rows, distances), nearest first."""

    def __init__(self, index: KnnIndex, width: int) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.track_ids = index.track_ids
        self.rows_, self.distances_ = index.neighbour_table(width)
        self.width = self.rows_.shape[1]

    def lookup(
        self, row: int, k: int, exclude: Collection[str]
    ) -> tuple[list[str], list[float]] | None:
        """Top-k of catalog row ``row`` without ``exclude`` (ids), or None if not cached."""
        if k > self.width:
            return None
        ids = self.track_ids[self.rows_[row]]
        distances = self.distances_[row]
        if exclude:
            keep = [i for i, track in enumerate(ids) if track not in exclude]
            if len(keep) < k:
                return None
            keep = keep[:k]
            return [str(ids[i]) for i in keep], [float(distances[i]) for i in keep]
        return [str(t) for t in ids[:k]], distances[:k].astype(float).tolist()


def build_neighbour_cache(
    latents: np.ndarray, track_ids: np.ndarray, width: int
) -> NeighbourCache | None:
    """The cache over an embedding's latents; None when ``width`` is 0 (off)."""
    if width == 0:
        return None
    return NeighbourCache(KnnIndex(latents, list(track_ids)), width)
