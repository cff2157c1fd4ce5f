"""`encore calibrate`: the simulated world next to the real figures it is calibrated to.

encore calibrate [--users 2000] [--days 100] [--seed 1] [--fit] [--out DIR]
    simulates the default world (real catalog, VAE latents, the myopic logging policy) and
    prints the table of targets: name, real value (computed from the real MSSD rows and
    the shared Spotify history), source, simulated value, tolerance, whether it is within
    it and whether a parameter was fitted to it (rl/simulator/targets.py). Rows without a
    real reference are shown as such. With --fit, the free parameters are first refitted
    on a pilot population (rl/simulator/calibration.py: calibrate_world) and the fitted
    values printed; the table is then measured on a fresh population with another seed.
    Exit code 1 when a target is outside its tolerance.
    Expect: about a minute per 1,000 users x 100 days on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rl import storage
from rl.cli.errors import UsageError
from rl.cli.options import add_command, add_embedding_option

#: Parameters ``calibrate_world`` fits (printed after --fit).
FITTED = (
    "skip_thresholds",
    "mood_feedback",
    "session_length_mean",
    "session_length_shape",
    "sessions_per_activity",
    "stickiness_mean",
)


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "calibrate", run_calibrate)
    parser.add_argument("--users", type=int, default=2_000, help="simulated users (default 2000)")
    parser.add_argument(
        "--days",
        type=int,
        default=100,
        help="days simulated (default 100; >= 91 so discoveries after day 30 have 59 days to return)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the measured run (default 1)")
    parser.add_argument("--k", type=int, default=4, help="candidates per decision (default 4)")
    parser.add_argument("--fit", action="store_true", help="refit the free parameters first")
    parser.add_argument(
        "--iterations", type=int, default=4, help="fit iterations with --fit (default 4)"
    )
    parser.add_argument("--out", default=None, help="write calibration.md and .json here")
    add_embedding_option(parser)


def run_calibrate(args: argparse.Namespace) -> int:
    """compare the simulated world with the real figures it is calibrated to

    Simulate the default world and print the calibration table: each real figure (MSSD skip
    shares and skip runs, the shared Spotify history's sessions, plays per active day and return
    days after a discovery) with its simulated value and tolerance. --fit refits the free
    parameters first.
    """
    _check_arguments(args)

    from rl.decision.observation import ObservationLayout
    from rl.simulator.config import SimulatorConfig
    from rl.simulator.real_catalog import catalog_corpus, default_logging_policy
    from rl.simulator.simulation import Simulator
    from rl.simulator.targets import (
        format_table,
        history_figures,
        mssd_figures,
        record_run,
        simulated_figures,
        target_table,
    )

    started = time.perf_counter()
    config = SimulatorConfig()
    corpus = catalog_corpus(args.k, config, seed=0, embedding_uri=args.embedding)
    layout = ObservationLayout(k=args.k, latent_dim=corpus.latent_dim)
    policy = default_logging_policy(layout, corpus)
    if args.fit:
        corpus, config = _fit_world(args, corpus, policy, layout, config, started)
    simulator = Simulator(corpus, args.users, policy, layout, config=config, seed=args.seed)
    print(f"measuring: {args.users} users x {args.days} days (seed {args.seed})", flush=True)
    recorder = record_run(simulator, args.days)
    history, mssd = history_figures(), mssd_figures()
    figures = simulated_figures(
        recorder, args.users, args.days, simulator.state.alive, history["active_day_share"]
    )
    rows = target_table(figures, mssd, history)
    table = format_table(rows)
    print(table)
    failed = [row.name for row in rows if row.ok is False]
    seconds = time.perf_counter() - started
    print(
        f"{len(rows) - sum(row.ok is None for row in rows) - len(failed)} targets within "
        f"tolerance, {len(failed)} outside{': ' + ', '.join(failed) if failed else ''} "
        f"({simulator.summary.decisions:,} decisions, {seconds:.0f} s)"
    )
    if args.out:
        _write_calibration(args, rows, figures, config, table)
    return 1 if failed else 0


def _check_arguments(args: argparse.Namespace) -> None:
    from rl.simulator.targets import DISCOVERY_BURN_IN_DAYS, RETURN_WINDOW_DAYS

    min_days = DISCOVERY_BURN_IN_DAYS + RETURN_WINDOW_DAYS + 2
    if args.users < 100:
        raise UsageError(f"--users must be >= 100, got {args.users}")
    if args.days < min_days:
        raise UsageError(
            f"--days must be >= {min_days} (a {DISCOVERY_BURN_IN_DAYS}-day burn-in, then "
            f"{RETURN_WINDOW_DAYS} days for discoveries to return), got {args.days}"
        )
    if args.k < 1 or args.iterations < 1:
        raise UsageError("--k and --iterations must be >= 1")


def _fit_world(
    args: argparse.Namespace, corpus: Any, policy: Any, layout: Any, config: Any, started: float
) -> tuple[Any, Any]:
    """--fit: refit the free parameters, printing each iteration; returns the corpus with
    its stickiness shifted to the fitted mean, and the fitted SimulatorConfig."""
    import dataclasses

    from rl.simulator.calibration import calibrate_world

    def progress(iteration: int, _config: Any, figures: dict[str, float]) -> None:
        print(
            f"fit {iteration + 1}/{args.iterations}: session mean {figures['session_mean']:.2f}, "
            f"P(skip|skip) {figures['skip_after_skip']:.3f}, P(skip|play) "
            f"{figures['skip_after_play']:.3f}, look-alike return days "
            f"{figures['lookalike_return_days_mean']:.2f} ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )

    fitted = calibrate_world(
        corpus, policy, layout, config, n_users=args.users, days=args.days,
        iterations=args.iterations, seed=args.seed + 7_919, on_iteration=progress,
    )  # fmt: skip
    shift = fitted.config.stickiness_mean - config.stickiness_mean
    corpus = dataclasses.replace(corpus, stickiness=corpus.stickiness + shift)
    config = fitted.config
    print("fitted parameters (SimulatorConfig):")
    for name in FITTED:
        print(f"  {name} = {getattr(config, name)!r}")
    return corpus, config


def _write_calibration(
    args: argparse.Namespace, rows: list[Any], figures: dict[str, Any], config: Any, table: str
) -> None:
    import dataclasses

    storage.write_json(
        storage.join(args.out, "calibration.json"),
        {
            "rows": [dataclasses.asdict(row) | {"ok": row.ok} for row in rows],
            "figures": figures,
            "users": args.users,
            "days": args.days,
            "seed": args.seed,
            "simulator_config": config.to_dict(),
        },
    )
    storage.write_bytes(storage.join(args.out, "calibration.md"), (table + "\n").encode())
    print(f"calibration.md and calibration.json under {args.out}")
