"""The one assembly of a ``RecommendationPipeline`` from a ``ServiceConfig``.

Where it sits: the Serve ingress (services/ingress.py) passes its hops to the Embedder,
Retriever and Scorer deployments; the in-process baseline (services/inprocess.py) passes the
same cores called locally. Everything else (catalog table, user-state store, feedback
sink, A/B split, neighbour cache, memory bounds) is built here once, so the two cannot
drift apart.
"""

from __future__ import annotations

from rl.songs.catalog import load_catalog
from rl.songs.embedding import SongEmbedding, ensure_song_embedding
from services.config import ServiceConfig
from services.core.feedback_journal import FeedbackSink
from services.core.neighbour_cache import build_neighbour_cache
from services.core.request_pipeline import (
    CatalogTable,
    EmbedFn,
    RecommendationPipeline,
    RetrieveFn,
    ScoreFn,
)
from services.core.scoring import ArmAssignment
from services.core.user_state import UserStateStore


def load_served_songs(config: ServiceConfig) -> tuple[SongEmbedding, CatalogTable]:
    """The song embedding (trained once if absent) and the catalog table aligned with it."""
    embedding = ensure_song_embedding(config.embedding_uri, config.catalog_uri, progress=False)
    try:
        metadata = load_catalog(config.catalog_uri).metadata
    except (FileNotFoundError, OSError, ValueError):
        metadata = None  # names/durations are for display; serving does not need them
    return embedding, CatalogTable.from_embedding(embedding.track_ids, embedding.latents, metadata)


def assemble_pipeline(
    config: ServiceConfig,
    catalog: CatalogTable,
    embed: EmbedFn,
    retrieve: RetrieveFn,
    score: ScoreFn,
) -> RecommendationPipeline:
    """The pipeline over ``catalog`` with the given hops and the config's store and sink."""
    layout = config.layout
    return RecommendationPipeline(
        layout=layout,
        catalog=catalog,
        store=UserStateStore(
            layout,
            default_taste=catalog.latents.mean(axis=0),
            max_users=config.max_users,
            max_pending=config.max_pending,
        ),
        sink=FeedbackSink(
            config.log_uri,
            config.journal_dir,
            flush_interval_s=config.flush_interval_s,
            fsync=config.fsync,
            k=layout.k,
            n_betas=layout.n_betas,
        ),
        embed=embed,
        retrieve=retrieve,
        score=score,
        arms=ArmAssignment(config.ab_arms),
        neighbour_cache=build_neighbour_cache(
            catalog.latents, catalog.track_ids, config.neighbour_cache_width
        ),
    )
