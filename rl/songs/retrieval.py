"""Exact k-nearest-neighbour candidate retrieval over song latents.

The blog's step 2: the action space (every song) is cut down to the k songs nearest the
current song in latent space. Backed by scikit-learn's ``NearestNeighbors`` (a KD-tree /
ball-tree for low-dimensional latents), so results are exact, not approximate; or by any
searcher with the same ``kneighbors`` (a faiss index built offline and checked at recall
>= 0.99 against exact, rl/songs/index_build.py) for catalogs of millions of songs.

Exclusion (songs the user already heard, the query song itself) is handled by asking the
index for ``k + len(exclude)`` neighbours and filtering, which keeps the answer exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sklearn.neighbors import NearestNeighbors


class RetrievalError(ValueError):
    """A retrieval request cannot be answered (k too large, unknown track, bad shape)."""


@dataclass(frozen=True)
class Neighbours:
    """Top-k answer for a batch of queries; rows padded with -1 / inf when fewer exist."""

    rows: np.ndarray  # (B, k) int64 catalog rows, -1 where no candidate is left
    track_ids: np.ndarray  # (B, k) object, None where rows == -1
    distances: np.ndarray  # (B, k) float32 Euclidean distance, inf where rows == -1


class Searcher(Protocol):
    """What ``KnnIndex`` searches with: scikit-learn's ``NearestNeighbors`` or a faiss index
    wrapped by rl/songs/index_build.py ``FaissSearcher``."""

    def kneighbors(self, queries: np.ndarray, /, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, n) distances and (B, n) int rows, nearest first."""
        ...


class KnnIndex:
    """Exact Euclidean kNN over an (N, D) latent matrix.

    Parameters
    ----------
    latents : (N, D) array of song latents.
    track_ids : (N,) ids aligned with ``latents`` (a sequence or an object array).
    algorithm : scikit-learn algorithm ("kd_tree" is exact and fast for D <= ~20).
    searcher : an already built searcher over ``latents`` with sklearn's
        ``kneighbors(queries, n_neighbors) -> (distances, rows)`` (rows -1 where it found
        fewer); None builds the exact scikit-learn index.
    """

    def __init__(
        self,
        latents: np.ndarray,
        track_ids: Sequence[str] | np.ndarray,
        algorithm: str = "kd_tree",
        searcher: Searcher | None = None,
    ) -> None:
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        if latents.ndim != 2 or len(latents) == 0:
            raise RetrievalError(f"latents must be a non-empty (N, D) array, got {latents.shape}")
        if len(track_ids) != len(latents):
            raise RetrievalError(
                f"{len(track_ids)} track ids for {len(latents)} latents: they must align"
            )
        if not np.all(np.isfinite(latents)):
            raise RetrievalError("latents contain NaN or inf")
        self.latents = latents
        self.track_ids = np.asarray(track_ids, dtype=object)
        self.row_of = {track_id: row for row, track_id in enumerate(self.track_ids)}
        self.searcher: Searcher = (
            searcher if searcher is not None else NearestNeighbors(algorithm=algorithm).fit(latents)
        )

    def __len__(self) -> int:
        return len(self.latents)

    @property
    def dim(self) -> int:
        return self.latents.shape[1]

    def rows_for(self, track_ids: Iterable[str]) -> np.ndarray:
        """Catalog rows of ``track_ids``; raises naming the first unknown id."""
        rows = []
        for track_id in track_ids:
            row = self.row_of.get(track_id)
            if row is None:
                raise RetrievalError(f"unknown track id {track_id!r}")
            rows.append(row)
        return np.asarray(rows, dtype=np.int64)

    def query(
        self,
        queries: np.ndarray,
        k: int = 4,
        exclude: Sequence[Iterable[str]] | Iterable[str] | None = None,
    ) -> Neighbours:
        """Exact top-k neighbours of each query latent.

        ``queries`` is (B, D) (or (D,) for one query). ``exclude`` is either one set of
        track ids applied to every query or a sequence of B sets, one per query.
        """
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise RetrievalError(f"queries must be (B, {self.dim}), got {queries.shape}")
        if not np.all(np.isfinite(queries)):
            raise RetrievalError("queries contain NaN or inf")
        if k < 1:
            raise RetrievalError(f"k must be >= 1, got {k}")
        if k > len(self):
            raise RetrievalError(f"k={k} is larger than the catalog ({len(self)} songs)")
        excluded_rows = self._excluded_rows(exclude, len(queries))
        extra = max((len(rows) for rows in excluded_rows), default=0)
        fetch = min(k + extra, len(self))
        distances, rows = self.searcher.kneighbors(queries, n_neighbors=fetch)
        out_rows = np.full((len(queries), k), -1, dtype=np.int64)
        out_distances = np.full((len(queries), k), np.inf, dtype=np.float32)
        for query, (row_list, distance_list) in enumerate(zip(rows, distances, strict=True)):
            keep = row_list >= 0  # an approximate searcher may find fewer than asked
            if excluded_rows[query]:
                keep &= ~np.isin(row_list, list(excluded_rows[query]))
            row_list, distance_list = row_list[keep], distance_list[keep]
            count = min(k, len(row_list))
            out_rows[query, :count] = row_list[:count]
            out_distances[query, :count] = distance_list[:count]
        track_ids = self.track_ids[np.maximum(out_rows, 0)]
        track_ids[out_rows < 0] = None
        return Neighbours(rows=out_rows, track_ids=track_ids, distances=out_distances)

    def neighbours_of_tracks(
        self, track_ids: Sequence[str], k: int = 4, exclude_self: bool = True
    ) -> Neighbours:
        """Top-k neighbours of catalog tracks, by default excluding each track itself."""
        rows = self.rows_for(track_ids)
        exclude = [{track_id} for track_id in track_ids] if exclude_self else None
        return self.query(self.latents[rows], k=k, exclude=exclude)

    def neighbour_table(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Every song's ``width`` nearest other songs, nearest first.

        Returns (N, w) int32 rows and (N, w) float32 distances with w = min(width, N - 1).
        One batched query for width + 1 neighbours, dropping each song itself, is exact and
        far cheaper than N queries with an exclusion set each. The simulator and the served
        ingress precompute their candidate tables with it.
        """
        if width < 1:
            raise RetrievalError(f"width must be >= 1, got {width}")
        width = min(width, len(self) - 1)
        if width < 1:  # a one-song catalog has no neighbours
            return np.full((len(self), 0), -1, np.int32), np.zeros((len(self), 0), np.float32)
        distances, rows = self.searcher.kneighbors(self.latents, n_neighbors=width + 1)
        not_self = rows != np.arange(len(self))[:, None]
        # Keep the first `width` entries that are not the song itself (a duplicate latent
        # may rank another row before the song itself).
        order = np.argsort(~not_self, axis=1, kind="stable")[:, :width]
        return (
            np.take_along_axis(rows, order, axis=1).astype(np.int32),
            np.take_along_axis(distances, order, axis=1).astype(np.float32),
        )

    def _excluded_rows(
        self, exclude: Sequence[Iterable[str]] | Iterable[str] | None, batch: int
    ) -> list[set[int]]:
        if exclude is None:
            return [set() for _ in range(batch)]
        items: list = list(exclude)
        per_query = len(items) == batch and all(not isinstance(item, str) for item in items)
        if per_query:
            sets: list[set[str]] = [set(item) for item in items]
        else:
            if any(not isinstance(item, str) for item in items):
                raise RetrievalError(
                    f"exclude must be one set of track ids or {batch} sets (one per query)"
                )
            sets = [set(items)] * batch
        # Unknown ids in an exclude set cannot be returned anyway: ignore them.
        return [{self.row_of[t] for t in ids if t in self.row_of} for ids in sets]


def brute_force_topk(
    latents: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Reference: exact top-k by computing every distance with numpy. (B, k) rows, dists."""
    latents = np.asarray(latents, np.float64)
    queries = np.atleast_2d(np.asarray(queries, np.float64))
    squared = (
        (queries**2).sum(1)[:, None] - 2.0 * queries @ latents.T + (latents**2).sum(1)[None, :]
    )
    part = np.argpartition(squared, kth=min(k, latents.shape[0] - 1), axis=1)[:, :k]
    order = np.take_along_axis(squared, part, axis=1).argsort(axis=1)
    rows = np.take_along_axis(part, order, axis=1)
    distances = np.sqrt(np.maximum(np.take_along_axis(squared, rows, axis=1), 0.0))
    return rows, distances


def recall_at_k(
    distances: np.ndarray, reference_distances: np.ndarray, tolerance: float = 1e-5
) -> float:
    """Tie-aware recall@k of an answer against the exact reference, both (B, k).

    A returned neighbour counts as a hit when it is no farther than the reference's k-th
    neighbour: songs at exactly the same distance (duplicated tracks with identical
    features exist in the real catalog) are interchangeable, so which of them is returned
    does not make an answer less exact.
    """
    kth = np.asarray(reference_distances)[:, -1:]
    return float(np.mean(np.asarray(distances) <= kth + tolerance))
