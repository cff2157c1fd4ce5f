"""``encore demo``: the main job on the embedded default (local Ray, local parquet, real catalog).

Runs the pipeline end to end on one machine and prints what each stage produced:
catalog -> song VAE -> kNN index -> neighbours of a few real tracks.
Expect about a minute on 2 cores the first time (the VAE trains once and is reused).
"""

from __future__ import annotations

import argparse
import time

from rl import paths
from rl.catalog import load_catalog
from rl.cli.embedding import embedding_quality, print_neighbours
from rl.embedding import ensure_song_embedding

#: Real tracks from different genres whose neighbours the demo prints.
DEMO_TRACKS = (
    "0sf12qNH5qcw8qpgymFOqD",  # pop: Blinding Lights, The Weeknd
    "4u7EnebtmKWzUH433cf5Qv",  # rock: Bohemian Rhapsody, Queen
    "0nbXyq5TXYPCO7pr3N8S4I",  # rap: The Box, Roddy Ricch
)


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the main job end to end on the embedded default and print each stage"
    )
    demo.add_argument("--catalog", default=None, help="catalog parquet URI")
    demo.add_argument(
        "--data", default=None, help=f"generated-data root (default {paths.data_dir()})"
    )
    demo.add_argument("-k", type=int, default=4)
    demo.set_defaults(func=run_demo)


def _stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    data_root = args.data or paths.data_dir()
    _stage("1. catalog")
    catalog = load_catalog(args.catalog)
    print(f"{len(catalog)} tracks from {args.catalog or paths.default_catalog_uri()}")

    _stage("2. song embedding (VAE, 11 features -> 5-d latent)")
    embedding_uri = f"{data_root}/embedding"
    embedding = ensure_song_embedding(embedding_uri, args.catalog)
    print(f"embedding at {embedding_uri}: validation MSE {embedding.metrics['validation_mse']:.4f}")

    _stage(f"3. kNN retrieval (top-{args.k}) and genre coherence")
    quality = embedding_quality(embedding.latents, catalog, args.k)
    print(
        f"genre coherence: latent {quality['genre_coherence_latent']:.3f}, raw features "
        f"{quality['genre_coherence_raw_features']:.3f}, chance {quality['chance']:.3f} "
        f"({quality['latent_over_chance']:.2f}x chance)"
    )
    tracks = [track for track in DEMO_TRACKS if track in catalog.metadata.index]
    tracks = tracks or list(catalog.track_ids[:3])
    print_neighbours(embedding, catalog, tracks, args.k)

    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    return 0
