"""``encore compare-policies``: simulate a log, fit the song table, train the actor-critic
(offline PPO) / MARWIL / BC on RLlib, evaluate every arm on the same simulated users.

One reproducible command for the issue's acceptance test (rl/experiments/compare_policies.py):
    encore compare-policies --seed 0 --out data/compare-s0
writes comparison.json (arms x metrics with 95% intervals, paired differences vs logging
and vs myopic-greedy), comparison.md and comparison.png (plus the log, steps, runs and a
registry whose versions hold the song table) there.
"""

from __future__ import annotations

import argparse
import dataclasses

from rl.cli.config_options import config_options
from rl.cli.options import ProgressPrinter, add_command, dated_output
from rl.cli.paths_check import require_new_output, require_writable

COMPARE_TRAIN_FIELDS = (
    "iterations", "train_batch_size", "updates_per_iteration", "lr", "clip", "entropy_coeff", "gamma",
)  # fmt: skip


def _compare_train_defaults() -> dict:
    from rl.experiments.compare_policies import CompareSettings

    train = CompareSettings().train
    return {name: getattr(train, name) for name in COMPARE_TRAIN_FIELDS}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "compare-policies", run_compare)
    config_options(
        p, "rl.experiments.compare_policies:CompareSettings", attr="settings",
        title="comparison (CompareSettings)", flags={"default_design": "--design"},
        choices={"default_design": ("auto", "session", "return-days")},
        skip={"song_table": "per-song feature table: its defaults",
              "train": "nested TrainConfig: its options are generated below"},
    )  # fmt: skip
    config_options(
        p, "rl.training.config:TrainConfig", attr="compare_train",
        title="training of every arm (TrainConfig)", only=COMPARE_TRAIN_FIELDS,
        defaults=_compare_train_defaults, flags={"train_batch_size": "--batch-size"},
    )  # fmt: skip
    p.add_argument(
        "--out",
        default=None,
        help="output URI (default: <data>/compare/<time>); must not hold data",
    )


def run_compare(args: argparse.Namespace) -> int:
    """simulate a log, train the actor-critic/MARWIL/BC, compare them in the simulator

    End to end: logging-policy log -> per-song feature table (Ray Data) -> offline steps with
    song features -> actor-critic (offline PPO, two value designs), MARWIL and BC on RLlib -> DR
    off-policy estimates on a held-out log and a paired simulator comparison against logging,
    myopic-greedy and q-personalised (all arms on the same new users) with 95% CIs; writes
    comparison.json, comparison.md and comparison.png under --out.
    """
    import torch

    from rl.cli.train import start_training_ray
    from rl.experiments.compare_policies import run_comparison

    torch.set_num_threads(1)
    train = dataclasses.replace(
        args.compare_train, checkpoint_every=max(1, args.compare_train.iterations)
    )
    settings = dataclasses.replace(args.settings, train=train)
    out = require_writable(require_new_output(dated_output(args.out, "compare")))
    progress = ProgressPrinter()
    start_training_ray(0)
    report = run_comparison(settings, out, progress)
    print(report.markdown)
    print(
        f"wrote {report.json_uri}, {report.markdown_uri} and {report.plot_uri} "
        f"in {progress.seconds:.0f} s"
    )
    return 0
