"""``encore catalog``, ``encore train-embedding``, ``encore neighbours``: the song side.

The VAE's options are generated from ``rl.songs.embedding.VAEConfig`` (field docs as help).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import TYPE_CHECKING

from rl import paths, storage
from rl.cli.config_options import config_options
from rl.cli.errors import CommandError
from rl.cli.options import add_catalog_option, add_command, add_embedding_option
from rl.cli.paths_check import require_path, require_writable

if TYPE_CHECKING:
    import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    catalog = add_command(subparsers, "catalog", run_catalog)
    add_catalog_option(catalog)

    train = add_command(subparsers, "train-embedding", run_train_embedding)
    add_catalog_option(train)
    train.add_argument(
        "--out", default=None,
        help=f"embedding folder URI (default: {paths.default_embedding_uri()})",
    )  # fmt: skip
    config_options(
        train, "rl.songs.embedding:VAEConfig", attr="vae_config", title="VAE (VAEConfig)",
        flags={"hidden_sizes": ("--hidden", "--hidden-sizes")},
    )  # fmt: skip
    train.add_argument(
        "--k", type=int, default=4,
        help="neighbours per track for the genre-coherence report (default: 4)",
    )  # fmt: skip

    neighbours = add_command(subparsers, "neighbours", run_neighbours)
    neighbours.add_argument("track_ids", nargs="+", metavar="TRACK_ID")
    neighbours.add_argument("-k", type=int, default=4, help="number of neighbours (default: 4)")
    add_embedding_option(neighbours)
    add_catalog_option(neighbours)


def load_catalog_option(uri: str | None):
    """The catalog of ``--catalog``, or ``CommandError`` (missing, not parquet, wrong columns)."""
    from rl.songs.catalog import CatalogError, load_catalog

    hint = "pass the Spotify songs catalog parquet (see /work/shared/data/README)"
    if uri:
        require_path(uri, "--catalog", hint)
    try:
        return load_catalog(uri)
    except CatalogError as exc:
        raise CommandError(f"{exc} (--catalog)", hint) from None
    except Exception as exc:  # pyarrow: not a parquet file, or a folder of other files
        if type(exc).__module__.startswith("pyarrow"):
            raise CommandError(
                f"cannot read {uri or paths.default_catalog_uri()} as a parquet catalog "
                f"({type(exc).__name__}) (--catalog)",
                hint,
            ) from None
        raise


def load_embedding_option(uri: str | None):
    """The embedding of ``--embedding`` (must exist), or the project's (trained if absent)."""
    from rl.songs.embedding import ensure_song_embedding, load_song_embedding

    if not uri:
        return ensure_song_embedding()
    hint = "train one: encore train-embedding --out DIR, then pass DIR"
    require_path(uri, "--embedding", hint)
    if storage.is_local(uri) and not storage.list_dir(uri):
        raise CommandError(f"{uri} is not an embedding folder (--embedding)", hint)
    try:
        return load_song_embedding(uri)
    except (FileNotFoundError, NotADirectoryError, KeyError, ValueError) as exc:
        raise CommandError(f"{uri} is not a song embedding: {exc} (--embedding)", hint) from None


def run_catalog(args: argparse.Namespace) -> int:
    """print catalog statistics (tracks, genres, feature ranges)

    Print the catalog's size, genres and the range of each audio feature.
    """
    import numpy as np

    from rl.songs.catalog import FEATURE_COLUMNS

    catalog = load_catalog_option(args.catalog)
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
    """train the song VAE (11 audio features -> latent) and save it with every song's latent

    Train the song VAE on the catalog's audio features, save it with every song's latent to
    --out, and report reconstruction error and genre coherence.
    """
    from rl.songs.embedding import train_song_embedding

    out = args.out or paths.default_embedding_uri()
    require_writable(out, "--out")
    catalog = load_catalog_option(args.catalog)
    embedding = train_song_embedding(catalog, args.vae_config)
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
    from rl.songs.catalog import FeatureScaler, genre_coherence
    from rl.songs.retrieval import KnnIndex

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
    from rl.songs.retrieval import KnnIndex

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
    """print a track and its k nearest songs in latent space

    Print each TRACK_ID and its k nearest songs in the embedding's latent space.
    """
    from rl.songs.retrieval import RetrievalError

    if args.k < 1:
        raise CommandError(f"-k must be >= 1, got {args.k}")
    catalog = load_catalog_option(args.catalog)
    embedding = load_embedding_option(args.embedding)
    try:
        print_neighbours(embedding, catalog, args.track_ids, args.k)
    except RetrievalError as exc:  # an unknown track id
        raise CommandError(
            str(exc), "find ids with `encore catalog` or the catalog parquet"
        ) from None
    return 0
