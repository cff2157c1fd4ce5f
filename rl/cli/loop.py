"""``encore loop``: production learning in the simulator, repeated (rl/training/closed_loop.py).

    encore loop --rounds 3 --users 2000 --days 14 --out data/loop

Each round serves production (greedy + epsilon) to the same simulated population, logs,
refits the song table, trains or fine-tunes the actor-critic, gates it by DR on held-out
days and promotes it when it passes; one line per round: reward/decision with the OPE
estimate made before serving, minutes and active days per user, the gate's verdict.
Writes the logs, steps, runs, the registry and loop.json under --out.
"""

from __future__ import annotations

import argparse
import dataclasses

from rl import storage
from rl.cli.config_options import config_options
from rl.cli.options import ProgressPrinter, add_command, dated_output


def _loop_train_defaults() -> dict:
    from rl.training.closed_loop import LoopConfig

    return {"iterations": LoopConfig().train.iterations}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "loop", run_loop_command)
    config_options(
        p, "rl.training.closed_loop:LoopConfig", attr="loop_config", title="the loop (LoopConfig)",
        skip={"gate": "the promotion gate: its --margin below",
              "song_table": "per-song feature table: its defaults",
              "train": "nested TrainConfig: its --iterations below"},
    )  # fmt: skip
    config_options(
        p, "rl.evaluation.promotion_gate:GateConfig", attr="gate_config",
        title="promotion gate (GateConfig)", only=("margin",),
    )  # fmt: skip
    config_options(
        p, "rl.training.config:TrainConfig", attr="loop_train", only=("iterations",),
        title="training each round (TrainConfig)", defaults=_loop_train_defaults,
    )  # fmt: skip
    p.add_argument("--out", default=None, help="output URI (default <data>/loop/<time>)")


def run_loop_command(args: argparse.Namespace) -> int:
    """serve -> log -> train -> gate -> promote, N rounds in the simulator

    The closed loop: serve production with exploration to a simulated population for --days
    days, log, fit the song table, train (round 1) or fine-tune the actor-critic, gate it
    against production by DR on the last --heldout-days, promote it when it passes. Prints one
    line per round.
    """
    import torch

    from rl.cli.train import start_training_ray
    from rl.training.closed_loop import run_loop

    torch.set_num_threads(1)
    iterations = args.loop_train.iterations
    train = dataclasses.replace(
        args.loop_config.train, iterations=iterations, checkpoint_every=max(1, iterations)
    )
    config = dataclasses.replace(args.loop_config, gate=args.gate_config, train=train)
    out = dated_output(args.out, "loop")
    progress = ProgressPrinter()
    start_training_ray(0)
    reports = run_loop(config, out, progress)
    print("\n".join(r.line() for r in reports))
    print(f"wrote {storage.join(out, 'loop.json')} in {progress.seconds:.0f} s")
    return 0
