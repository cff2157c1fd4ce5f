"""``encore ab-test`` and ``encore data-efficiency``: the paper's experiments in simulation.

What it does: simulates a population under the myopic logging policy, fits the long-term
models on the log (Ray Data for the log reduction), then runs the banner (one
recommendation per user, 60-day follow-up) and shelf (ranked weekly shelf) A/B tests with
arms control / personalised / unpersonalised / square-root (plus the registry's production
PPO policy when one exists, and with --train-ppo PPO actor-critics trained with RLlib on the
test's own history log: "return-days" = immediate reward + λ · return days in the window,
"session" = the per-decision listen reward), or the data-efficiency study on the banner
outcomes. Each writes report.md with tables and PNG figures to --out.

Run: `encore ab-test --users 20000 --seed 0` (~5-10 min on 2 cores), or small and fast:
`encore ab-test --users 3000 --history-days 90 --no-shelf`; with the long-term PPO arm and the
session-reward PPO beside it: `encore ab-test --users 3000 --history-days 90 --window-days 30
--songs 3000 --no-shelf --no-ppo --train-ppo return-days session` (~5 min more).
Expect: long-term arms with fewer or similar first streams and more 60-day active days and
minutes than control; calibration points near the diagonal.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from rl import paths
from rl.cli.offline_steps import add_return_reward_arguments, return_reward_config
from rl.cli.options import OLD_REWARD_NAMES, REWARDS, renamed_choice


def _ab_config(args: argparse.Namespace, run_shelf: bool):
    from rl.experiments.ab_test import ABTestConfig
    from rl.longterm.fitted_models import ModelConfig

    return ABTestConfig(
        n_users=args.users,
        history_days=args.history_days,
        window_days=args.window_days,
        n_markets=args.markets,
        pool_size=args.pool_size,
        shelf_weeks=args.shelf_weeks,
        run_shelf=run_shelf,
        lasting_min_minutes=getattr(args, "lasting_minutes", 10.0),
        bootstrap=args.bootstrap,
        seed=args.seed,
        log_engine=args.log_engine,
        models=ModelConfig(
            horizon_days=args.window_days,
            seed=args.seed,
            stickiness_taste_distance=not args.paper_stickiness,
            return_source="any" if args.paper_stickiness else "organic",
        ),
    )


def _song_world(args: argparse.Namespace) -> dict[str, Any]:
    """Latents (VAE), ids, durations and popularity of the catalog songs."""
    from rl.songs.catalog import load_catalog
    from rl.songs.embedding import ensure_song_embedding

    embedding = ensure_song_embedding(args.embedding)
    catalog = load_catalog(args.catalog)
    metadata = catalog.metadata.reindex(embedding.track_ids)
    rows = np.arange(len(embedding.track_ids))
    if args.songs and args.songs < len(rows):  # a random subset keeps small runs small
        rows = np.sort(np.random.default_rng(args.seed).choice(rows, args.songs, replace=False))
    return {
        "latents": embedding.latents[rows],
        "track_ids": np.asarray(embedding.track_ids)[rows],
        "durations_s": metadata["duration_ms"].to_numpy(np.float64)[rows] / 1000.0,
        "popularity": metadata["track_popularity"].to_numpy(np.float64)[rows],
    }


def _ppo_arm(args: argparse.Namespace, latent_dim: int):
    if args.no_ppo:
        return None
    from rl.registry import ModelRegistry, PolicyScorer

    registry = ModelRegistry(args.registry)
    try:
        if registry.production_version() is None:
            print(f"no production policy in {args.registry}: running without the PPO arm")
            return None
        policy = PolicyScorer.from_registry(registry)
    except Exception as exc:  # a broken or incompatible registry must not stop the A/B test
        print(f"PPO arm skipped: {exc}")
        return None
    if policy.layout.latent_dim != latent_dim:
        print(
            f"PPO arm skipped: its latent_dim {policy.layout.latent_dim} != the embedding's {latent_dim}"
        )
        return None
    return policy


def _ppo_arms_config(args: argparse.Namespace):
    from rl.experiments.ppo_arms import PPOArmsConfig
    from rl.training.config import TrainConfig

    return PPOArmsConfig(
        rewards=tuple(dict.fromkeys(args.train_ppo)),
        # The A/B test's window counts the recommendation day: W = window - 1 return days.
        long_term=return_reward_config(args, return_window_days=args.window_days - 1),
        train=TrainConfig(
            iterations=args.ppo_iterations,
            lr=args.ppo_lr,
            entropy_coeff=args.ppo_entropy_coeff,
            seed=args.seed,
        ),
    )


def _run(args: argparse.Namespace, run_shelf: bool) -> dict[str, Any]:
    import ray
    from tqdm import tqdm

    from rl.experiments.ab_test import run_ab_test

    config = _ab_config(args, run_shelf)
    train_ppo = getattr(args, "train_ppo", None)
    if (config.log_engine == "ray" or train_ppo) and not ray.is_initialized():
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    songs = _song_world(args)
    ppo = _ppo_arm(args, songs["latents"].shape[1])
    diagnostics: dict[str, Any] = {}
    train_arms = None
    if train_ppo:
        import torch

        from rl.experiments.ppo_arms import train_ppo_arms

        ppo_config = _ppo_arms_config(args)
        torch.set_num_threads(1)  # Ray Data workers share the cores (see `encore train`)

        def train_arms(world, work_uri):
            arms, found = train_ppo_arms(
                world, work_uri, ppo_config, log=lambda line: print(line, flush=True),
                on_iteration=lambda r: print(
                    f"  iter {r.iteration}: " + " ".join(f"{k}={v:.4f}" for k, v in r.losses.items()),
                    flush=True,
                ),
            )  # fmt: skip
            diagnostics.update(found)
            return arms

    bar = tqdm(total=config.history_days, desc="history days", unit="day")
    start = time.time()
    results = run_ab_test(
        songs["latents"], songs["track_ids"], config, work_uri=args.work_dir,
        durations_s=songs["durations_s"], popularity=songs["popularity"], ppo=ppo,
        progress=lambda day, summary: bar.update(1), train_policy_arms=train_arms,
    )  # fmt: skip
    bar.close()
    results["policy_diagnostics"] = diagnostics
    print(f"simulated and measured in {time.time() - start:.0f} s")
    return {"results": results, "config": config}


def ab_test(args: argparse.Namespace) -> int:
    from rl.experiments.reports import write_ab_report

    run = _run(args, run_shelf=not args.no_shelf)
    path = write_ab_report(run["results"], args.out, run["config"], args.bootstrap, args.seed)
    print(f"report: {path}")
    return 0


def data_efficiency(args: argparse.Namespace) -> int:
    import pandas as pd

    from rl.experiments.data_efficiency import outcomes_from_banner, sample_size_study
    from rl.experiments.reports import sample_sizes_up_to, write_data_efficiency_report

    if args.banner:
        banner = pd.read_parquet(args.banner)
    else:
        banner = _run(args, run_shelf=False)["results"]["banner"]
        os.makedirs(args.out, exist_ok=True)
        banner.to_parquet(os.path.join(args.out, "banner_users.parquet"))
    rng = np.random.default_rng(args.seed)
    a = outcomes_from_banner(banner, args.action_a, args.auxiliary_fraction, rng)
    b = outcomes_from_banner(banner, args.action_b, args.auxiliary_fraction, rng)
    largest = min(len(a.engaged), len(b.engaged))
    sizes = args.sizes or sample_sizes_up_to(largest)
    study = sample_size_study(a, b, sizes, seed=args.seed)
    path = write_data_efficiency_report(
        study, args.out, a.name, b.name,
        {a.name: len(a.auxiliary_minutes), b.name: len(b.auxiliary_minutes)}, args.seed,
    )  # fmt: skip
    print(f"report: {path}")
    return 0


def _common(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--users", type=int, default=20_000, help="simulated users (default 20000)")
    parser.add_argument(
        "--history-days", type=int, default=120, help="logged history before the test (default 120)"
    )
    parser.add_argument(
        "--window-days",
        type=int,
        default=60,
        help="follow-up window and stickiness horizon (default 60)",
    )
    parser.add_argument("--markets", type=int, default=12, help="banner markets (default 12)")
    parser.add_argument(
        "--pool-size", type=int, default=40, help="eligible songs per market (default 40)"
    )
    parser.add_argument(
        "--shelf-weeks", type=int, default=9, help="shelf experiment weeks (default 9)"
    )
    parser.add_argument(
        "--songs",
        type=int,
        default=0,
        help="use a random subset of this many catalog songs (0 = all)",
    )
    parser.add_argument(
        "--bootstrap", type=int, default=500, help="bootstrap resamples for intervals (default 500)"
    )
    parser.add_argument("--seed", type=int, default=0, help="one seed for everything (default 0)")
    parser.add_argument(
        "--log-engine",
        choices=("ray", "pyarrow"),
        default="ray",
        help="how the history log is read",
    )
    parser.add_argument(
        "--cpus", type=int, default=2, help="CPUs for the local Ray runtime (default 2)"
    )
    parser.add_argument(
        "--embedding", default=None, help="song embedding URI (default: trained if absent)"
    )
    parser.add_argument(
        "--catalog", default=None, help="catalog parquet URI (default: the shared real catalog)"
    )
    parser.add_argument(
        "--registry", default=paths.default_registry_uri(), help="model registry URI (PPO arm)"
    )
    parser.add_argument(
        "--no-ppo", action="store_true", help="do not add the registry's PPO policy as an arm"
    )
    parser.add_argument(
        "--work-dir", default=None, help="where simulated logs go (default: a temp dir)"
    )
    parser.add_argument(
        "--paper-stickiness",
        action="store_true",
        help="the literal stickiness model: u = [taste, activity] only and return days of any "
        "source (over-predicts ~2x on the banner); default adds the taste-to-song distance "
        "and counts organic return days",
    )
    parser.add_argument(
        "--out", default=default_out, help=f"report directory (default {default_out})"
    )


def register(subparsers: Any) -> None:
    reports = os.path.join(paths.data_dir(), "reports")
    ab = subparsers.add_parser(
        "ab-test",
        help="simulated A/B test of the long-term (stickiness) arms: banner and shelf",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(ab, os.path.join(reports, "ab-test"))
    ab.add_argument("--no-shelf", action="store_true", help="run the banner experiment only")
    ab.add_argument(
        "--train-ppo",
        nargs="+",
        type=renamed_choice(OLD_REWARD_NAMES, "--train-ppo"),
        choices=REWARDS[::-1],
        default=None,
        help="train offline-PPO arms on the history log (RLlib): 'return-days' (immediate reward "
        "+ λ x return days) and/or 'session' (per-decision listen reward); arms ppo-<reward> "
        "(old names longterm / seed1 still accepted)",
    )
    ab.add_argument("--ppo-iterations", type=int, default=10, help="RLlib iterations (default 10)")
    ab.add_argument("--ppo-lr", type=float, default=3e-4, help="PPO arms' learning rate")
    ab.add_argument("--ppo-entropy-coeff", type=float, default=0.01,
                    help="PPO arms' entropy bonus (default 0.01, as `encore train`)")  # fmt: skip
    add_return_reward_arguments(ab)
    ab.add_argument("--lasting-minutes", type=float, default=10.0,
                    help="minutes for a 'lasting discovery' (paper: 120 for podcasts; default 10 for songs)")  # fmt: skip
    ab.set_defaults(func=ab_test)

    de = subparsers.add_parser(
        "data-efficiency",
        help="holistic vs local vs decomposed Q-value estimators against sample size (paper 6.2)",
        description="Runs the banner A/B test (or reads --banner) and compares the standard errors of "
        "three estimators of two meta-actions' values as the sample grows; writes report.md and a plot.",
    )
    _common(de, os.path.join(reports, "data-efficiency"))
    de.add_argument(
        "--banner",
        default=None,
        help="banner_users.parquet from `encore ab-test` (skips the simulation)",
    )
    de.add_argument(
        "--action-a", default="control", help="meta-action A (a banner arm; default control)"
    )
    de.add_argument(
        "--action-b", default="personalised", help="meta-action B (default personalised)"
    )
    de.add_argument("--auxiliary-fraction", type=float, default=0.25,
                    help="share of each arm's users held out as the auxiliary discovery dataset")  # fmt: skip
    de.add_argument(
        "--sizes", type=int, nargs="*", default=None, help="sample sizes (default: 50 .. all users)"
    )
    de.set_defaults(func=data_efficiency)
