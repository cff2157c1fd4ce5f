"""The served multi-source candidate pool: the request's ranked lists, merged.

Where it sits: ``RecommendationPipeline`` (services/core/request_pipeline.py) asks it for
each request's candidates when the service runs a multi-source pool
(``CandidatePoolConfig``, rl/decision/candidate_pool.py, the same merge the simulator
uses). The lists come from what the service already has:

* ``song``: the song playing's neighbours (the pipeline's neighbour cache or Retriever);
* ``taste``: one batched Retriever call with the users' taste latents as queries (the
  Retriever's existing API takes latents);
* ``relationship``: the user store's relationship songs, strongest long-memory state
  (the last beta) at the start of today first;
* ``popular`` / ``sticky``: uniform draws among the song table's most listened / stickiest
  songs (the table of the served version), none without a table (backfilled).

Every candidate's distance is measured from the song playing (what the response shows,
and what the Retriever returns for the ``song`` source). The source names go into the
decision's log row (``candidate_sources``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rl.decision.candidate_pool import (
    CandidatePoolConfig,
    exploration_draws,
    merge_pool,
    source_names,
    top_rows_by,
)
from services.core.catalog_table import CatalogTable

RetrieveFn = Callable[
    [np.ndarray, int, list[list[str]]], Awaitable[list[tuple[list[str], list[float]]]]
]


@dataclass(frozen=True)
class PooledCandidates:
    """One request's pool: ids, distances from the song playing, and sources."""

    track_ids: list[str]
    distances: list[float]
    sources: list[str]


class ServedCandidatePool:
    """Builds multi-source pools for batches of requests (see the module docstring).

    ``store`` is the pipeline's ``UserStore`` (its ``user`` gives the taste and the
    relationships); ``song_table`` is a ``SongFeatureTable`` or None."""

    def __init__(
        self,
        config: CandidatePoolConfig,
        catalog: CatalogTable,
        store: Any,
        retrieve: RetrieveFn,
        song_table: Any | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.store = store
        self.retrieve = retrieve
        self.rng = np.random.default_rng(config.seed)
        self.betas = np.asarray(store.layout.betas, np.float32)
        self.top: dict[str, np.ndarray] = {
            "popular": np.zeros(0, np.int64),
            "sticky": np.zeros(0, np.int64),
        }
        if song_table is not None:
            aligned = song_table.aligned(np.asarray(catalog.track_ids))
            self.top["popular"] = top_rows_by(
                aligned.popularity, config.explore_top, aligned.listens > 0
            )
            self.top["sticky"] = top_rows_by(
                aligned.stickiness, config.explore_top, aligned.discoveries > 0
            )

    def _rows(self, ids: Sequence[str], width: int) -> np.ndarray:
        rows = [self.catalog.row_of[t] for t in ids if t in self.catalog.row_of][:width]
        return np.asarray(rows + [-1] * (width - len(rows)), np.int64)

    async def gather(
        self,
        user_ids: list[str],
        track_ids: list[str | None],  # the song playing (None for raw features)
        excludes: list[list[str]],
        current: np.ndarray,  # (B, D) latents of the songs playing
        song_neighbours: list[tuple[list[str], list[float]]],
        day: int,
    ) -> list[PooledCandidates]:
        config, batch, k = self.config, len(user_ids), self.config.k
        ranked: dict[str, np.ndarray] = {}
        if "song" in config.sources:
            ranked["song"] = np.stack([self._rows(ids, k) for ids, _ in song_neighbours])
        states = None
        if {"taste", "relationship"} & set(config.sources):
            states = [await self.store.user(user_id) for user_id in user_ids]
        if "taste" in config.sources:
            assert states is not None
            tastes = np.stack(
                [self.store.default_taste if s is None else s.taste for s in states]
            ).astype(np.float32)
            answers = await self.retrieve(tastes, k, [list(e) for e in excludes])
            ranked["taste"] = np.stack([self._rows(ids, k) for ids, _ in answers])
        if "relationship" in config.sources:
            assert states is not None
            ranked["relationship"] = np.stack(
                [self._strongest(state, day, 2 * k + 8) for state in states]
            )
        for name in ("popular", "sticky"):
            if name in config.sources:
                width = 2 * config.quota(name) + 2
                ranked[name] = exploration_draws(self.top[name], batch, width, self.rng)
        excluded = [
            [*exclude, *([track] if track is not None else [])]
            for exclude, track in zip(excludes, track_ids, strict=True)
        ]
        width = max((len(e) for e in excluded), default=0)
        exclude_rows = np.stack([self._rows(e, width) for e in excluded]) if width else None
        pool = merge_pool(ranked, config, exclude_rows)
        names = source_names(pool.sources)
        out = []
        for b in range(batch):
            rows = pool.rows[b][pool.rows[b] >= 0]
            distances = np.linalg.norm(self.catalog.latents[rows] - current[b], axis=1)
            out.append(
                PooledCandidates(
                    [str(self.catalog.track_ids[r]) for r in rows],
                    distances.astype(float).tolist(),
                    names[b],
                )
            )
        return out

    def _strongest(self, state: Any, day: int, width: int) -> np.ndarray:
        """The user's relationship songs in the catalog, strongest long memory first."""
        if state is None or not state.relationships:
            return np.full(width, -1, np.int64)
        ids = [t for t in state.relationships if t in self.catalog.row_of]
        strength = np.asarray(
            [state.relationships[t].at_start_of(day, self.betas)[-1] for t in ids], np.float64
        )
        order = np.argsort(-strength, kind="stable")
        return self._rows([ids[i] for i in order], width)


def served_candidate_pool(
    config: Any, catalog: CatalogTable, store: Any, retrieve: RetrieveFn
) -> ServedCandidatePool | None:
    """The pool ``config.candidate_pool`` asks for (None: today's kNN pool), with the
    production version's song table for the popular/sticky sources (none without one:
    those slots are backfilled). The table is read once at start: a promotion changes
    the Scorer's table at once, the pool's exploration lists at the next replica start."""
    if not config.candidate_pool:
        return None
    from rl.registry import ModelRegistry

    pool = CandidatePoolConfig.from_spec(config.candidate_pool, seed=config.seed or 0)
    table = None
    registry = ModelRegistry(config.registry_uri)
    version = registry.production_version() if config.registry_uri else None
    if version is not None:
        table = registry.load_song_table(version)
    return ServedCandidatePool(pool, catalog, store, retrieve, table)
