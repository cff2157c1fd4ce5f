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
import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from rl import paths
from rl.cli.config_options import config_options
from rl.cli.errors import CommandError, UsageError
from rl.cli.offline_steps import add_return_reward_options
from rl.cli.options import (
    OLD_REWARD_NAMES,
    REWARDS,
    add_catalog_option,
    add_command,
    add_embedding_option,
    add_ray_cpus_option,
    add_registry_option,
    renamed_choice,
)
from rl.cli.paths_check import require_new_output, require_path, require_writable


def _stickiness_models(args: argparse.Namespace):
    """The long-term models' config: horizon = the test's window; --paper-stickiness."""
    from rl.longterm.fitted_models import ModelConfig

    return ModelConfig(
        horizon_days=args.window_days,
        seed=args.seed,
        stickiness_taste_distance=not args.paper_stickiness,
        return_source="any" if args.paper_stickiness else "organic",
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

    registry = ModelRegistry(args.registry or paths.default_registry_uri())
    try:
        if registry.production_version() is None:
            print(f"no production policy in {registry.uri}: running without the PPO arm")
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

    return PPOArmsConfig(
        rewards=tuple(dict.fromkeys(args.train_ppo)),
        long_term=args.return_reward,
        train=dataclasses.replace(args.ppo_train, seed=args.seed),
    )


def _ppo_training(args: argparse.Namespace, diagnostics: dict[str, Any]):
    """``train_policy_arms(world, work_uri)`` for ``--train-ppo``, or None."""
    if not args.train_ppo:
        return None
    import torch

    from rl.experiments.ppo_arms import train_ppo_arms

    ppo_config = _ppo_arms_config(args)
    torch.set_num_threads(1)  # Ray Data workers share the cores (see `encore train`)

    def print_iteration(report) -> None:
        losses = " ".join(f"{k}={v:.4f}" for k, v in report.losses.items())
        print(f"  iter {report.iteration}: {losses}", flush=True)

    def train_arms(world, work_uri):
        arms, found = train_ppo_arms(
            world, work_uri, ppo_config, log=lambda line: print(line, flush=True),
            on_iteration=print_iteration,
        )  # fmt: skip
        diagnostics.update(found)
        return arms

    return train_arms


@contextlib.contextmanager
def _work_dir(args: argparse.Namespace) -> Iterator[str]:
    """``--work-dir`` (new or empty: a second run into it would double the logs), or a
    temporary folder removed at the end."""
    if args.work_dir:
        require_writable(require_new_output(args.work_dir, "--work-dir"), "--work-dir")
        yield args.work_dir
        return
    with tempfile.TemporaryDirectory(prefix="encore-ab-") as work:
        yield work


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from rl.cluster.ray_runtime import start_ray
    from rl.experiments.ab_test import run_ab_test

    config = args.ab_config
    with _work_dir(args) as work:
        if config.log_engine == "ray" or args.train_ppo:
            start_ray(num_cpus=args.cpus)
        songs = _song_world(args)
        ppo = _ppo_arm(args, songs["latents"].shape[1])
        diagnostics: dict[str, Any] = {}
        bar = tqdm(total=config.history_days, desc="history days", unit="day")
        start = time.time()
        results = run_ab_test(
            songs["latents"], songs["track_ids"], config, work_uri=work,
            durations_s=songs["durations_s"], popularity=songs["popularity"], ppo=ppo,
            progress=lambda day, summary: bar.update(1),
            train_policy_arms=_ppo_training(args, diagnostics),
        )  # fmt: skip
        bar.close()
    results["policy_diagnostics"] = diagnostics
    print(f"simulated and measured in {time.time() - start:.0f} s")
    return {"results": results, "config": config}


def _check_outputs(args: argparse.Namespace) -> None:
    require_writable(args.out, "--out")
    if args.embedding:
        require_path(
            args.embedding, "--embedding", "train one with `encore train-embedding --out DIR`"
        )
    if args.catalog:
        require_path(args.catalog, "--catalog", "pass the catalog parquet (see /work/shared/data)")


def ab_test(args: argparse.Namespace) -> int:
    """simulated A/B test of the long-term (stickiness) arms: banner and shelf"""
    from rl.experiments.reports import write_ab_report

    _check_outputs(args)
    run = _run(args)
    path = write_ab_report(run["results"], args.out, run["config"], args.bootstrap, args.seed)
    print(f"report: {path}")
    return 0


def _read_banner(uri: str):
    import pandas as pd

    require_path(uri, "--banner", "pass the banner_users.parquet that `encore ab-test` wrote")
    try:
        banner = pd.read_parquet(uri)
    except Exception as exc:  # not parquet at all
        raise CommandError(
            f"cannot read {uri} as parquet ({type(exc).__name__}) (--banner)"
        ) from None
    missing = {"arm", "first_stream", "minutes", "total_minutes"} - set(banner.columns)
    if missing:
        raise CommandError(
            f"{uri} is not an ab-test banner table: no {', '.join(sorted(missing))} column (--banner)",
            "pass the banner_users.parquet that `encore ab-test` or `encore data-efficiency` wrote",
        )
    return banner


def data_efficiency(args: argparse.Namespace) -> int:
    """holistic vs local vs decomposed Q-value estimators against sample size (paper 6.2)

    Runs the banner A/B test (or reads --banner) and compares the standard errors of three
    estimators of two meta-actions' values as the sample grows; writes report.md and a plot.
    """
    from rl.experiments.data_efficiency import outcomes_from_banner, sample_size_study
    from rl.experiments.reports import sample_sizes_up_to, write_data_efficiency_report

    if not 0.0 < args.auxiliary_fraction < 1.0:
        raise UsageError(f"--auxiliary-fraction must be in (0, 1), got {args.auxiliary_fraction}")
    _check_outputs(args)
    if args.banner:
        banner = _read_banner(args.banner)
    else:
        banner = _run(args)["results"]["banner"]
        os.makedirs(args.out, exist_ok=True)
        banner.to_parquet(os.path.join(args.out, "banner_users.parquet"))
    arms = sorted(banner["arm"].unique())
    for option, arm in (("--action-a", args.action_a), ("--action-b", args.action_b)):
        if arm not in arms:
            raise CommandError(
                f"{option} {arm}: no such arm in the banner", f"arms: {', '.join(arms)}"
            )
    rng = np.random.default_rng(args.seed)
    try:
        a = outcomes_from_banner(banner, args.action_a, args.auxiliary_fraction, rng)
        b = outcomes_from_banner(banner, args.action_b, args.auxiliary_fraction, rng)
        largest = min(len(a.engaged), len(b.engaged))
        sizes = args.sizes or sample_sizes_up_to(largest)
        study = sample_size_study(a, b, sizes, seed=args.seed)
    except ValueError as exc:  # too few users or discoveries for the study
        raise CommandError(
            f"cannot run the study on this banner: {exc}",
            "simulate more users (--users) or pass smaller --sizes / --auxiliary-fraction",
        ) from None
    path = write_data_efficiency_report(
        study, args.out, a.name, b.name,
        {a.name: len(a.auxiliary_minutes), b.name: len(b.auxiliary_minutes)}, args.seed,
    )  # fmt: skip
    print(f"report: {path}")
    return 0


AB_TEST_CONFIG = "rl.experiments.ab_test:ABTestConfig"
AB_TEST_FLAGS = {
    "n_users": "--users",
    "n_markets": "--markets",
    "lasting_min_minutes": "--lasting-minutes",
}
MODELS_FIELD = {"models": "built from --window-days, --seed and --paper-stickiness"}


def add_ab_test_options(parser: argparse.ArgumentParser, *, shelf: bool) -> None:
    """ABTestConfig's options (generated), plus where songs, models and outputs come from."""
    config_options(
        parser, AB_TEST_CONFIG, attr="ab_config", title="experiment (ABTestConfig)",
        flags=AB_TEST_FLAGS | ({"run_shelf": "--shelf"} if shelf else {}),
        choices={"log_engine": ("ray", "pyarrow")}, skip=MODELS_FIELD,
        fixed={"models": _stickiness_models} | ({} if shelf else {"run_shelf": False}),
    )  # fmt: skip
    parser.add_argument(
        "--songs", type=int, default=0,
        help="use a random subset of this many catalog songs (default: 0 = all)",
    )  # fmt: skip
    add_ray_cpus_option(parser, "--cpus")
    add_embedding_option(parser)
    add_catalog_option(parser)
    add_registry_option(parser)
    parser.add_argument(
        "--no-ppo", action="store_true", help="do not add the registry's PPO policy as an arm"
    )
    parser.add_argument(
        "--work-dir", default=None,
        help="where simulated logs go; must be new or empty (default: a temporary folder, removed)",
    )  # fmt: skip
    parser.add_argument(
        "--paper-stickiness", action="store_true",
        help="the literal stickiness model: u = [taste, activity] only and return days of any "
        "source (over-predicts ~2x on the banner); default adds the taste-to-song distance "
        "and counts organic return days",
    )  # fmt: skip


def _add_out(parser: argparse.ArgumentParser, name: str) -> None:
    from rl import paths

    default_out = os.path.join(paths.data_dir(), "reports", name)
    parser.add_argument(
        "--out", default=default_out, help=f"report directory (default: {default_out})"
    )


def register(subparsers: Any) -> None:
    ab = add_command(subparsers, "ab-test", ab_test, description=__doc__)
    add_ab_test_options(ab, shelf=True)
    _add_out(ab, "ab-test")
    ab.add_argument(
        "--train-ppo", nargs="+", type=renamed_choice(OLD_REWARD_NAMES, "--train-ppo"),
        choices=REWARDS[::-1], default=None,
        help="train offline-PPO arms on the history log (RLlib): 'return-days' (immediate reward "
        "+ λ x return days) and/or 'session' (per-decision listen reward); arms ppo-<reward> "
        "(old names longterm / seed1 still accepted)",
    )  # fmt: skip
    config_options(
        ab, "rl.training.config:TrainConfig", attr="ppo_train", title="PPO arms (TrainConfig)",
        prefix="ppo-", only=("iterations", "lr", "entropy_coeff"), defaults={"iterations": 10},
    )  # fmt: skip
    add_return_reward_options(ab, window_from_ab_test=True)
    ab.set_defaults(train_ppo=None)

    de = add_command(subparsers, "data-efficiency", data_efficiency)
    add_ab_test_options(de, shelf=False)
    _add_out(de, "data-efficiency")
    de.add_argument(
        "--banner", default=None,
        help="banner_users.parquet from `encore ab-test` (skips the simulation)",
    )  # fmt: skip
    de.add_argument(
        "--action-a", default="control", help="meta-action A, a banner arm (default: control)"
    )
    de.add_argument(
        "--action-b", default="personalised", help="meta-action B (default: personalised)"
    )
    de.add_argument(
        "--auxiliary-fraction", type=float, default=0.25,
        help="share of each arm's users held out as the auxiliary discovery dataset, in (0, 1) "
        "(default: 0.25)",
    )  # fmt: skip
    de.add_argument(
        "--sizes", type=int, nargs="*", default=None, help="sample sizes (default: 50 .. all users)"
    )
    de.set_defaults(train_ppo=None)
