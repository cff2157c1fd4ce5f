"""The one assembly of a ``RecommendationPipeline`` from a ``ServiceConfig``.

Where it sits: the Serve ingress (services/ingress.py) passes its hops to the Embedder,
Retriever and Scorer deployments; the in-process baseline (services/inprocess.py) passes the
same cores called locally. Everything else (catalog table, user-state store, feedback
sink, A/B split, neighbour cache, memory bounds) is built here once, so the two cannot
drift apart. The user state is rebuilt (or a shared store reloaded) from the decision log
before the first request (services/user_state_rebuild.py), after the feedback sink has
replayed any journal a crash left behind, so the log it reads is complete.
"""

from __future__ import annotations

import numpy as np

from rl.songs.catalog import load_catalog
from rl.songs.embedding import SongEmbedding
from services.config import ServiceConfig
from services.core.catalog_table import CatalogTable
from services.core.feedback_journal import FeedbackSink
from services.core.memory_user_store import InProcessUserStore
from services.core.neighbour_cache import build_neighbour_cache
from services.core.request_pipeline import (
    EmbedFn,
    RecommendationPipeline,
    RetrieveFn,
    ScoreFn,
)
from services.core.scoring import ArmAssignment
from services.core.served_pool import served_candidate_pool
from services.core.user_state import UserStore


def load_served_songs(config: ServiceConfig) -> tuple[SongEmbedding, CatalogTable]:
    """The song embedding (trained once if absent) and the catalog table aligned with it."""
    embedding = config.song_embedding()
    try:
        metadata = load_catalog(config.catalog_uri).metadata
    except (FileNotFoundError, OSError, ValueError):
        metadata = None  # names/durations are for display; serving does not need them
    return embedding, CatalogTable.from_embedding(embedding.track_ids, embedding.latents, metadata)


def make_user_store(config: ServiceConfig, default_taste: np.ndarray) -> UserStore:
    """The store ``config.user_store`` names (not yet connected)."""
    if config.user_store == "memory":
        return InProcessUserStore(
            config.layout,
            default_taste=default_taste,
            max_users=config.max_users,
            max_pending=config.max_pending,
        )
    from services.core.redis_user_store import RedisUserStore

    return RedisUserStore(
        config.layout,
        default_taste=default_taste,
        url=config.user_store,
        namespace=config.user_store_namespace,
        pending_ttl_s=config.pending_ttl_s,
    )


def prepare_user_store(config: ServiceConfig, store: UserStore, catalog: CatalogTable) -> str:
    """Rebuild or reload ``store`` from the log (``config.rebuild_user_state``); returns
    what happened, for the replica's log."""
    from services.user_state_rebuild import describe_report, prepare_at_start, run_in_fresh_loop

    if not config.rebuild_user_state:
        return "user state: not rebuilt at start (rebuild_user_state is off)"

    async def prepare() -> dict:
        # A shared store gets its own client here: clients belong to the loop they run on.
        target = store if store.kind == "memory" else make_user_store(config, store.default_taste)
        try:
            return await prepare_at_start(
                target, config.log_uri, catalog, engine=config.user_state_engine
            )
        finally:
            if target is not store:
                await target.close()

    return describe_report(run_in_fresh_loop(prepare))


def assemble_pipeline(
    config: ServiceConfig,
    catalog: CatalogTable,
    embed: EmbedFn,
    retrieve: RetrieveFn,
    score: ScoreFn,
) -> RecommendationPipeline:
    """The pipeline over ``catalog`` with the given hops and the config's store and sink;
    the store is rebuilt or reloaded from the log before this returns."""
    layout = config.layout
    sink = FeedbackSink(
        config.log_uri,
        config.journal_dir,
        flush_interval_s=config.flush_interval_s,
        fsync=config.fsync,
        k=layout.k,
        n_betas=layout.n_betas,
    )
    store = make_user_store(config, default_taste=catalog.latents.mean(axis=0))
    print(prepare_user_store(config, store, catalog), flush=True)
    return RecommendationPipeline(
        candidate_pool=served_candidate_pool(config, catalog, store, retrieve),
        layout=layout,
        catalog=catalog,
        store=store,
        sink=sink,
        embed=embed,
        retrieve=retrieve,
        score=score,
        arms=ArmAssignment(config.ab_arms),
        neighbour_cache=build_neighbour_cache(
            catalog.latents, catalog.track_ids, config.neighbour_cache_width
        ),
    )
