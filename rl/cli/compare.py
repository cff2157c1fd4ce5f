"""``encore compare-policies``: simulate a log, train offline PPO / MARWIL / BC on RLlib,
evaluate every policy against the logging policy on the same simulated users.

One reproducible command for the issue's acceptance test (rl/experiments/compare_policies.py):
    encore compare-policies --out data/compare
writes comparison.md and comparison.png (plus the log, steps, runs and a registry) there.
"""

from __future__ import annotations

import argparse
import time

from rl import paths, storage
from rl.training.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    from rl.experiments.compare_policies import CompareSettings

    d = CompareSettings()
    p = subparsers.add_parser(
        "compare-policies",
        help="simulate a log, train offline PPO/MARWIL/BC, compare them in the simulator",
        description="End to end: logging-policy log -> Ray Data offline steps -> offline PPO, "
        "MARWIL and BC on RLlib -> DR off-policy estimates on a held-out log and a paired "
        "simulator comparison (all arms on the same new users) with 95%% CIs; writes "
        "comparison.md and comparison.png under --out.",
    )
    p.add_argument("--users", type=int, default=d.users, help="logged users")
    p.add_argument("--days", type=int, default=d.days, help="logged days")
    p.add_argument("--heldout-users", type=int, default=d.heldout_users)
    p.add_argument("--eval-users", type=int, default=d.eval_users, help="users per arm")
    p.add_argument("--eval-days", type=int, default=d.eval_days, help="simulated days per arm")
    p.add_argument("--iterations", type=int, default=d.train.iterations)
    p.add_argument("--batch-size", type=int, default=d.train.train_batch_size)
    p.add_argument("--updates-per-iteration", type=int, default=d.train.updates_per_iteration)
    p.add_argument("--lr", type=float, default=d.train.lr)
    p.add_argument("--clip", type=float, default=d.train.clip)
    p.add_argument("--entropy-coeff", type=float, default=d.train.entropy_coeff)
    p.add_argument("--gamma", type=float, default=d.train.gamma)
    p.add_argument("--bootstrap", type=int, default=d.bootstrap)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=None, help="output URI (default $ENCORE_DATA/compare/<time>)")
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    import torch

    from rl.cli.train import _start_ray
    from rl.experiments.compare_policies import CompareSettings, run_comparison

    torch.set_num_threads(1)
    settings = CompareSettings(
        users=args.users,
        days=args.days,
        heldout_users=args.heldout_users,
        eval_users=args.eval_users,
        eval_days=args.eval_days,
        seed=args.seed,
        bootstrap=args.bootstrap,
        train=TrainConfig(
            iterations=args.iterations,
            train_batch_size=args.batch_size,
            updates_per_iteration=args.updates_per_iteration,
            lr=args.lr,
            clip=args.clip,
            entropy_coeff=args.entropy_coeff,
            gamma=args.gamma,
            checkpoint_every=max(1, args.iterations),
        ),
    )
    out = args.out or storage.join(paths.data_dir(), "compare", time.strftime("%Y%m%d-%H%M%S"))
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    _start_ray(0)
    report = run_comparison(settings, out, progress)
    print(report.markdown)
    print(
        f"wrote {report.markdown_uri} and {report.plot_uri} in {time.perf_counter() - started:.0f} s"
    )
    return 0
