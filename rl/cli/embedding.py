"""``encore catalog``, ``encore train-embedding``, ``encore neighbours``: the song side."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import numpy as np

from rl import paths
from rl.songs.catalog import (
    FEATURE_COLUMNS,
    CatalogError,
    FeatureScaler,
    genre_coherence,
    load_catalog,
)
from rl.songs.embedding import (
    VAEConfig,
    ensure_song_embedding,
    load_song_embedding,
    train_song_embedding,
)
from rl.songs.retrieval import KnnIndex, RetrievalError


def register(subparsers: argparse._SubParsersAction) -> None:
    catalog = subparsers.add_parser(
        "catalog", help="print catalog statistics (tracks, genres, feature ranges)"
    )
    catalog.add_argument(
        "--catalog", default=None, help="catalog parquet URI (default: the shared real catalog)"
    )
    catalog.set_defaults(func=run_catalog)

    train = subparsers.add_parser(
        "train-embedding",
        help="train the song VAE (11 audio features -> latent) and save it with every song's latent",
    )
    train.add_argument("--catalog", default=None, help="catalog parquet URI")
    train.add_argument(
        "--out", default=None, help=f"embedding URI (default {paths.default_embedding_uri()})"
    )
    train.add_argument("--latent-dim", type=int, default=VAEConfig.latent_dim)
    train.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=list(VAEConfig.hidden_sizes),
        help="encoder hidden sizes",
    )
    train.add_argument("--kl-weight", type=float, default=VAEConfig.kl_weight)
    train.add_argument("--epochs", type=int, default=VAEConfig.epochs)
    train.add_argument("--seed", type=int, default=VAEConfig.seed)
    train.add_argument(
        "--k", type=int, default=4, help="neighbours per track for the genre-coherence report"
    )
    train.set_defaults(func=run_train_embedding)

    neighbours = subparsers.add_parser(
        "neighbours", help="print a track and its k nearest songs in latent space"
    )
    neighbours.add_argument("track_ids", nargs="+", metavar="TRACK_ID")
    neighbours.add_argument("-k", type=int, default=4, help="number of neighbours (default 4)")
    neighbours.add_argument(
        "--embedding", default=None, help="embedding URI (trained first if absent)"
    )
    neighbours.add_argument("--catalog", default=None, help="catalog parquet URI")
    neighbours.set_defaults(func=run_neighbours)


def run_catalog(args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog(args.catalog)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"catalog: {args.catalog or paths.default_catalog_uri()}")
    print(f"tracks (deduplicated on track_id): {len(catalog)}")
    print("genres:")
    for genre, count in Counter(catalog.genres()).most_common():
        print(f"  {genre:<8} {count:>6}  ({count / len(catalog):.1%})")
    print(f"subgenres: {catalog.metadata['playlist_subgenre'].nunique()}")
    print(f"{'feature':<18}{'min':>10}{'median':>10}{'max':>10}")
    for column, values in zip(FEATURE_COLUMNS, catalog.features.T, strict=True):
        print(f"{column:<18}{values.min():>10.3f}{np.median(values):>10.3f}{values.max():>10.3f}")
    return 0


def run_train_embedding(args: argparse.Namespace) -> int:
    config = VAEConfig(
        latent_dim=args.latent_dim,
        hidden_sizes=tuple(args.hidden),
        kl_weight=args.kl_weight,
        epochs=args.epochs,
        seed=args.seed,
    )
    catalog = load_catalog(args.catalog)
    embedding = train_song_embedding(catalog, config)
    out = args.out or paths.default_embedding_uri()
    embedding.save(out)
    report = embedding_quality(embedding.latents, catalog, args.k)
    embedding.metrics["quality"] = report
    embedding.save(out)
    print(f"saved embedding to {out}")
    print(json.dumps({"validation_mse": embedding.metrics["validation_mse"], **report}, indent=2))
    print("validation reconstruction MSE per feature:")
    for name, value in embedding.metrics["validation_mse_per_feature"].items():
        print(f"  {name:<18}{value:.4f}")
    return 0


def embedding_quality(latents: np.ndarray, catalog, k: int = 4) -> dict[str, float]:
    """Genre coherence of top-k neighbours for the latents and the raw features, and chance."""
    genres = catalog.genres()
    ids = list(catalog.track_ids)
    latent_rows = KnnIndex(latents, catalog.track_ids).neighbours_of_tracks(ids, k=k).rows
    latent_coherence, chance = genre_coherence(latent_rows, genres)
    raw = FeatureScaler.fit(catalog.features).transform(catalog.features)
    raw_rows = KnnIndex(raw, catalog.track_ids).neighbours_of_tracks(ids, k=k).rows
    raw_coherence, _ = genre_coherence(raw_rows, genres)
    return {
        "k": k,
        "genre_coherence_latent": latent_coherence,
        "genre_coherence_raw_features": raw_coherence,
        "chance": chance,
        "latent_over_chance": latent_coherence / chance,
    }


def print_neighbours(embedding, catalog, track_ids: list[str], k: int) -> None:
    index = KnnIndex(embedding.latents, embedding.track_ids)
    answer = index.neighbours_of_tracks(track_ids, k=k)
    for query, track_id in enumerate(track_ids):
        print(f"{track_id}  {catalog.describe(track_id)}")
        for rank in range(k):
            neighbour = answer.track_ids[query, rank]
            if neighbour is None:
                continue
            distance = answer.distances[query, rank]
            print(f"  {rank + 1}. {neighbour}  d={distance:.3f}  {catalog.describe(neighbour)}")


def run_neighbours(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    embedding = load_song_embedding(args.embedding) if args.embedding else ensure_song_embedding()
    try:
        print_neighbours(embedding, catalog, args.track_ids, args.k)
    except RetrievalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
