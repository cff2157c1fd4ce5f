"""``encore demo``: the main job on the embedded default (local Ray, local parquet, real catalog).

Runs the whole loop on one machine and prints what each stage produced:

1. catalog -> 2. song VAE -> 3. kNN neighbours of real tracks ->
4. simulated listeners write a feedback log (parquet) -> 5. Ray Data turns it into RLlib
offline steps -> 6. offline PPO on RLlib trains the actor-critic and registers a version,
which is promoted -> 7. the Ray Serve app (HTTP + gRPC) serves it: real requests for real
tracks, feedback written back into the parquet log that training reads.

Expect 5-10 minutes on 2 cores the first time; generated data goes under ``--data``
(default ``./data``), and each run of the demo writes a fresh log and a new model version.
"""

from __future__ import annotations

import argparse
import time

from rl import paths, storage
from rl.cli.config_options import config_options
from rl.cli.errors import CommandError
from rl.cli.options import add_catalog_option, add_command

#: Real tracks from different genres whose neighbours the demo prints.
DEMO_TRACKS = (
    "0sf12qNH5qcw8qpgymFOqD",  # pop: Blinding Lights, The Weeknd
    "4u7EnebtmKWzUH433cf5Qv",  # rock: Bohemian Rhapsody, Queen
    "0nbXyq5TXYPCO7pr3N8S4I",  # rap: The Box, Roddy Ricch
)


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = add_command(subparsers, "demo", run_demo)
    add_catalog_option(demo)
    demo.add_argument(
        "--data", default=None, help=f"generated-data root (default {paths.data_dir()})"
    )
    config_options(
        demo, "rl.decision.observation:ObservationLayout", attr="layout", only=("k",),
        flags={"k": ("-k", "--k")}, title="policy",
    )  # fmt: skip
    demo.add_argument("--users", type=int, default=2000, help="simulated users (default 2000)")
    demo.add_argument("--days", type=int, default=14, help="simulated days (default 14)")
    demo.add_argument(
        "--iterations", type=int, default=10, help="offline PPO iterations (default 10)"
    )
    demo.add_argument(
        "--skip-serving", action="store_true", help="stop after training (no Ray Serve stage)"
    )


def _stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _run_command(argv: list[str]) -> None:
    """Run one `encore` subcommand as a stage; a failing stage stops the demo."""
    from rl.cli import main

    print("$ encore " + " ".join(argv), flush=True)
    code = main(argv)
    if code != 0:
        raise CommandError(
            f"demo stage `encore {argv[0]}` failed with exit code {code}",
            "its own message is above; run that command alone to look into it",
        )


def _log_to_trained_policy(
    args: argparse.Namespace, data_root: str, run_id: str, embedding_uri: str
) -> None:
    """Stages 4-6 as the commands a user would type: simulate, offline-steps, train."""
    log_uri = storage.join(data_root, "logs", f"demo-{run_id}")
    steps_uri = storage.join(data_root, "offline", f"demo-{run_id}")
    registry_uri = storage.join(data_root, "registry")
    _stage("4. simulated listeners -> feedback log (parquet, partitioned by day)")
    _run_command(
        [
            "simulate",
            "--users",
            str(args.users),
            "--days",
            str(args.days),
            "--k",
            str(args.k),
            "--out",
            log_uri,
            "--embedding",
            embedding_uri,
        ]
    )

    _stage("5. Ray Data: feedback log -> RLlib offline steps (one episode per session)")
    _run_command(
        [
            "offline-steps",
            "--log",
            log_uri,
            "--out",
            steps_uri,
            "--embedding",
            embedding_uri,
            "--k",
            str(args.k),
        ]
    )

    _stage("6. offline PPO actor-critic on RLlib -> model registry (promoted)")
    _run_command(
        [
            "train",
            "--algo",
            "offline-ppo",
            "--data",
            steps_uri,
            "--iterations",
            str(args.iterations),
            "--registry",
            registry_uri,
            "--promote",
        ]
    )
    _run_command(["models", "--registry", registry_uri])


def _song_stages(args: argparse.Namespace, data_root: str) -> str:
    """Stages 1-3: the catalog, the song embedding, kNN retrieval; returns the embedding URI."""
    from rl.cli.embedding import embedding_quality, load_catalog_option, print_neighbours
    from rl.songs.embedding import ensure_song_embedding

    _stage("1. catalog")
    catalog = load_catalog_option(args.catalog)
    print(f"{len(catalog)} tracks from {args.catalog or paths.default_catalog_uri()}")

    _stage("2. song embedding (VAE, 11 features -> 5-d latent)")
    embedding_uri = storage.join(data_root, "embedding")
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
    return embedding_uri


def run_demo(args: argparse.Namespace) -> int:
    """run the main job end to end on the embedded default and print each stage"""
    started = time.perf_counter()
    data_root = args.data or paths.data_dir()
    if not args.skip_serving:
        # Serve reads its mode when Ray's processes start, and the first stages start Ray:
        # the serving stage's fast path (direct ingress) must be in the environment by then.
        from services.app import use_serve_fast_path

        use_serve_fast_path()
    run_id = time.strftime("%Y%m%d-%H%M%S")
    embedding_uri = _song_stages(args, data_root)
    _log_to_trained_policy(args, data_root, run_id, embedding_uri)

    if not args.skip_serving:
        _stage("7. Ray Serve: embedding, retrieval, scoring behind HTTP + gRPC; feedback")
        from services.demo_stage import run_serving_demo

        run_serving_demo(data_root, args.catalog, k=args.k)

    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    return 0
