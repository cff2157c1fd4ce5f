"""`encore simulate`, `encore import-mssd`, `encore propagate-rewards`: make and inspect logs.

encore simulate --users 10000 --days 60 --out data/logs/sim [--seed 0] [--k 4]
    simulates listeners on the real catalog (VAE latents; trained on first use) under
    the myopic logging policy, writes the decision + organic log (parquet by day) and
    <out>/summary.json (users, decisions, skip shares vs MSSD, mean reward).
encore import-mssd --out data/logs/mssd
    writes the real MSSD rows into the same schema (source = "mssd").
encore propagate-rewards --log data/logs/sim
    K-means reward propagation (the blog's section 7) evaluated on the log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

from rl import paths, storage
from rl.cli.config_options import config_options
from rl.cli.errors import CommandError, UsageError
from rl.cli.options import add_command, add_embedding_option
from rl.cli.paths_check import (
    fresh_output,
    require_log,
    require_new_output,
    require_path,
    require_writable,
)


def register(subparsers: Any) -> None:
    _add_simulate(subparsers)
    _add_import_mssd(subparsers)
    _add_propagate_rewards(subparsers)


def _add_simulate(subparsers: Any) -> None:
    simulate = add_command(subparsers, "simulate", run_simulate)
    simulate.add_argument(
        "--users", type=int, default=10_000, help="number of simulated users (default 10000)"
    )
    simulate.add_argument("--days", type=int, default=60, help="days to simulate (default 60)")
    simulate.add_argument(
        "--out", default=paths.default_log_uri(),
        help="log URI; must be new or empty (default %(default)s)",
    )  # fmt: skip
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    config_options(
        simulate, "rl.decision.observation:ObservationLayout", attr="layout", only=("k",),
        title="observation layout",
    )  # fmt: skip
    add_embedding_option(simulate)
    simulate.add_argument(
        "--no-calibrate", action="store_true", help="keep the default skip thresholds"
    )
    simulate.add_argument(
        "--epsilon", type=float, default=0.1,
        help="logging policy's uniform exploration, in [0, 1] (default 0.1)",
    )  # fmt: skip
    simulate.add_argument(
        "--temperature", type=float, default=0.5,
        help="logging policy's softmax temperature, > 0 (default 0.5)",
    )  # fmt: skip
    simulate.add_argument(
        "--shard-users",
        type=int,
        default=0,
        help="run the population as Ray tasks of this many users each, each writing its own "
        "files (disjoint user and session ids); 0 = one process (default)",
    )
    simulate.add_argument(
        "--parallel", type=int, default=2, help="shards at a time with --shard-users (default 2)"
    )
    config_options(
        simulate, "rl.simulator.config:SimulatorConfig", attr="simulator_config",
        title="simulated world (SimulatorConfig; unless --no-calibrate, the skip thresholds "
        "are fitted to the real MSSD shares)",
    )  # fmt: skip


def _add_import_mssd(subparsers: Any) -> None:
    mssd = add_command(subparsers, "import-mssd", run_import_mssd)
    mssd.add_argument(
        "--out",
        default=storage.join(paths.data_dir(), "logs", "mssd"),
        help="log URI; must be new or empty (default %(default)s)",
    )
    mssd.add_argument("--mssd", default=None, help="MSSD CSV URI (default: the shared sample)")


def _add_propagate_rewards(subparsers: Any) -> None:
    propagate = add_command(subparsers, "propagate-rewards", run_propagate)
    propagate.add_argument(
        "--log", default=paths.default_log_uri(), help="log URI (default %(default)s)"
    )
    add_embedding_option(propagate)
    propagate.add_argument(
        "--clusters", type=int, default=100, help="K-means clusters (default 100)"
    )
    propagate.add_argument(
        "--per-cluster", type=int, default=4, help="measured songs per cluster (default 4)"
    )
    propagate.add_argument(
        "--decay-rate", type=float, default=0.5, help="exp decay rate in d/d_max (default 0.5)"
    )
    propagate.add_argument(
        "--min-plays", type=int, default=20, help="plays for a song's true mean (default 20)"
    )


def run_simulate(args: argparse.Namespace) -> int:
    """simulate listeners and write a feedback log

    Simulate N users for D days on the real catalog under the myopic logging policy (skip levels
    calibrated to the real MSSD rows) and write the decision log, the organic-listen log
    (parquet partitioned by day) and summary.json under --out.
    """
    from tqdm import tqdm

    from rl.decision.observation import ObservationLayout
    from rl.feedback.log import FeedbackLogWriter
    from rl.simulator.real_catalog import build_simulator, catalog_corpus, default_logging_policy

    if args.users < 1 or args.days < 1:
        raise UsageError(f"--users and --days must be >= 1, got {args.users} and {args.days}")
    if not 0.0 <= args.epsilon <= 1.0 or args.temperature <= 0:
        raise UsageError("--epsilon must be in [0, 1] and --temperature > 0")
    if args.shard_users < 0 or args.parallel < 1:
        raise UsageError("--shard-users must be >= 0 and --parallel >= 1")
    if args.embedding:
        require_path(args.embedding, "--embedding", "train one: encore train-embedding --out DIR")
    require_writable(require_new_output(args.out, "--out"), "--out")
    args.k = args.layout.k
    started = time.perf_counter()
    world = args.simulator_config  # generated options (SimulatorConfig); defaults unchanged
    corpus = catalog_corpus(args.k, world, args.seed, embedding_uri=args.embedding)
    layout = ObservationLayout(k=args.k, latent_dim=corpus.latent_dim)
    policy = default_logging_policy(layout, corpus, args.temperature, args.epsilon)
    if args.shard_users:  # the driver only calibrates the world; shards hold the users
        built = build_simulator(
            1, args.k, args.seed, corpus=corpus, policy=policy, config=world,
            calibrate=not args.no_calibrate,
        )  # fmt: skip
        return _run_sharded(args, built, started)
    built = build_simulator(
        args.users, args.k, args.seed, corpus=corpus, policy=policy, config=world,
        calibrate=not args.no_calibrate,
    )  # fmt: skip
    simulator = built.simulator
    # Written beside --out and moved into place with summary.json at the end: Ctrl-C or an
    # error leaves nothing at --out that `encore offline-steps` would take for a whole log.
    with fresh_output(args.out, "--out") as target:
        with FeedbackLogWriter(target, k=args.k, n_betas=layout.n_betas, background=True) as writer:
            with tqdm(total=args.days, unit="day", desc="simulating") as bar:

                def on_day(day: int, summary: Any) -> None:
                    bar.update(1)
                    bar.set_postfix(
                        decisions=summary.decisions, alive=int(simulator.state.alive.sum())
                    )

                summary = simulator.run(args.days, writer=writer, on_day=on_day)
        _write_summary(args, target, summary, policy, simulator, writer, started)
    print_simulation_summary(args, summary, writer)
    return 0 if writer.quarantined_rows == 0 else 1


def _run_sharded(args: argparse.Namespace, built: Any, started: float) -> int:
    """``--shard-users``: one Ray task per shard of the population (rl/simulator/shards.py)."""
    from rl.simulator.shards import shard_sizes, simulate_sharded

    n_shards = len(shard_sizes(args.users, args.shard_users))
    print(f"{args.users:,} users in {n_shards} shards, {args.parallel} at a time (Ray)")

    def on_shard(result: Any) -> None:
        print(
            f"  shard {result.shard}: users u{result.first_user_id:07d}.. ({result.users:,}), "
            f"{result.summary['decisions']:,} decisions, {result.seconds:.0f} s, "
            f"peak RSS {result.peak_rss_mib:,.0f} MiB",
            flush=True,
        )

    with fresh_output(args.out, "--out") as target:
        results = simulate_sharded(
            args.users, args.shard_users, args.days, built.corpus, built.policy, built.layout,
            built.simulator.config, target, seed=args.seed, parallel=args.parallel,
            on_shard=on_shard,
        )  # fmt: skip
        totals = {
            key: sum(result.summary[key] for result in results)
            for key in ("decisions", "sessions", "active_user_days", "churned_users")
        }
        result = {
            "users": args.users,
            "days": args.days,
            **totals,
            "written_rows": sum(shard.written_rows for shard in results),
            "written_organic_rows": sum(shard.written_organic_rows for shard in results),
            "quarantined_rows": sum(shard.quarantined_rows for shard in results),
            "shards": [dataclasses.asdict(shard) for shard in results],
            "simulator_config": built.simulator.config.to_dict(),
            "seconds": time.perf_counter() - started,
        }
        storage.write_json(storage.join(target, "summary.json"), result)
    print(
        f"users {args.users:,}, days {args.days}, decisions {totals['decisions']:,}, "
        f"{result['written_organic_rows']:,} organic rows; log and summary.json under "
        f"{args.out} ({result['seconds']:.1f} s)"
    )
    return 0 if result["quarantined_rows"] == 0 else 1


def _write_summary(args, target, summary, policy, simulator, writer, started) -> None:
    from rl.feedback.importers.mssd import mssd_skip_shares

    real = mssd_skip_shares()
    result = summary.to_dict() | {
        "seed": args.seed,
        "k": args.k,
        "policy": policy.to_dict(),
        "simulator_config": simulator.config.to_dict(),
        "reward_config": simulator.reward_config.to_dict(),
        "mssd_skip_shares": real,
        "log": writer.counts,
        "seconds": time.perf_counter() - started,
    }
    storage.write_json(storage.join(target, "summary.json"), result)
    args.real_skip_shares, args.seconds = real, result["seconds"]


def print_simulation_summary(args, summary, writer) -> None:
    real = args.real_skip_shares
    print(
        f"users {summary.users}, days {summary.days}, decisions {summary.decisions:,}, "
        f"mean reward {summary.mean_reward:.3f}, churned {summary.churned_users}"
    )
    print("skip shares  simulated  MSSD")
    for name, share in summary.skip_shares.items():
        print(f"  {name:12s} {share:9.3f}  {real[name]:.3f}")
    print(writer.report())
    print(f"log and summary.json under {args.out} ({args.seconds:.1f} s)")


def run_import_mssd(args: argparse.Namespace) -> int:
    """import the real MSSD session rows into the log schema

    Convert the real MSSD rows (skip flags -> skip level -> listen fraction, documented in
    rl/feedback/importers/mssd.py) into decision rows under --out.
    """
    from rl.feedback.importers.mssd import import_mssd

    if args.mssd:
        require_path(args.mssd, "--mssd", "pass an MSSD session CSV (default: the shared sample)")
    require_writable(require_new_output(args.out, "--out"), "--out")
    with fresh_output(args.out, "--out") as target:
        try:
            result = import_mssd(target, args.mssd)
        except (ValueError, UnicodeDecodeError) as exc:  # not a CSV, or not MSSD's columns
            raise CommandError(
                f"{args.mssd} is not an MSSD session CSV: {str(exc)[:200]}",
                "pass a log_*.csv file of the Music Streaming Sessions Dataset",
            ) from None
    print(result["report"])
    print(f"wrote the log under {args.out}")
    print(
        f"{result['source_rows']} MSSD rows, {result['sessions']} sessions; skip shares: "
        + ", ".join(f"{k} {v:.3f}" for k, v in result["skip_shares"].items())
    )
    return 0 if result["quarantined_rows"] == 0 else 1


def run_propagate(args: argparse.Namespace) -> int:
    """evaluate K-means reward propagation on a log

    Cluster song latents with K-means, take ~4 measured songs per cluster, propagate r_est =
    r_cluster * exp(-rate * d/d_max) to the others and report correlation and MAE against the
    true mean rewards of unmeasured songs, versus a global-mean baseline.
    """
    from rl.feedback.log import read_decisions_table
    from rl.songs.embedding import ensure_song_embedding
    from rl.songs.reward_propagation import evaluate_propagation

    if min(args.clusters, args.per_cluster, args.min_plays) < 1 or args.decay_rate < 0:
        raise UsageError(
            "--clusters, --per-cluster and --min-plays must be >= 1, --decay-rate >= 0"
        )
    require_log(args.log, "--log")
    if args.embedding:
        require_path(args.embedding, "--embedding", "train one: encore train-embedding --out DIR")
    embedding = ensure_song_embedding(args.embedding)
    decisions = read_decisions_table(args.log, validate=False).select(["chosen_track_id", "reward"])
    try:
        report = evaluate_propagation(
            decisions, embedding.latents, embedding.track_ids, n_clusters=args.clusters,
            songs_per_cluster=args.per_cluster, decay_rate=args.decay_rate, min_plays=args.min_plays,
        )  # fmt: skip
    except ValueError as exc:  # too few measured songs in a small log
        raise CommandError(
            f"cannot evaluate propagation on {args.log}: {exc}",
            "lower --min-plays (plays for a song's true mean) or --clusters, or use a longer log",
        ) from None
    print(json.dumps(report.to_dict(), indent=2))
    print(
        f"propagated: corr {report.correlation:.3f}, MAE {report.mae:.3f}; "
        f"cluster mean (no decay): corr {report.cluster_mean_correlation:.3f}, MAE {report.cluster_mean_mae:.3f}; "
        f"global-mean baseline MAE {report.baseline_mae:.3f} "
        f"({report.n_measured} measured, {report.n_evaluated} evaluated songs)"
    )
    return 0
