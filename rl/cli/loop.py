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
import time

from rl import paths, storage


def register(subparsers: argparse._SubParsersAction) -> None:
    from rl.training.closed_loop import LoopConfig

    d = LoopConfig()
    p = subparsers.add_parser(
        "loop",
        help="serve -> log -> train -> gate -> promote, N rounds in the simulator",
        description="The closed loop: serve production with exploration to a simulated "
        "population for --days days, log, fit the song table, train (round 1) or fine-tune "
        "the actor-critic, gate it against production by DR on the last --heldout-days, "
        "promote it when it passes. Prints one line per round.",
    )
    p.add_argument("--rounds", type=int, default=d.rounds, help=f"rounds (default {d.rounds})")
    p.add_argument("--users", type=int, default=d.users, help=f"simulated users ({d.users})")
    p.add_argument("--days", type=int, default=d.days, help=f"days served per round ({d.days})")
    p.add_argument(
        "--heldout-days", type=int, default=d.heldout_days, help="last days kept for the gate"
    )
    p.add_argument("--epsilon", type=float, default=d.epsilon, help="served exploration")
    p.add_argument("--return-weight", type=float, default=d.return_weight)
    p.add_argument("--iterations", type=int, default=d.train.iterations, help="per round")
    p.add_argument("--margin", type=float, default=d.gate.margin, help="gate's margin")
    p.add_argument("--force", action="store_true", help="promote even when the gate refuses")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=None, help="output URI (default <data>/loop/<time>)")
    p.set_defaults(func=run_loop_command)


def run_loop_command(args: argparse.Namespace) -> int:
    import torch

    from rl.cli.train import start_training_ray
    from rl.evaluation.promotion_gate import GateConfig
    from rl.training.closed_loop import LoopConfig, run_loop

    torch.set_num_threads(1)
    d = LoopConfig()
    try:
        config = LoopConfig(
            rounds=args.rounds,
            users=args.users,
            days=args.days,
            heldout_days=args.heldout_days,
            epsilon=args.epsilon,
            return_weight=args.return_weight,
            seed=args.seed,
            gate=GateConfig(margin=args.margin),
            force=args.force,
            train=dataclasses.replace(
                d.train, iterations=args.iterations, checkpoint_every=max(1, args.iterations)
            ),
        )
    except ValueError as exc:
        from rl.cli.errors import UsageError

        raise UsageError(str(exc)) from exc
    out = args.out or storage.join(paths.data_dir(), "loop", time.strftime("%Y%m%d-%H%M%S"))
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    start_training_ray(0)
    reports = run_loop(config, out, progress)
    print("\n".join(r.line() for r in reports))
    print(f"wrote {storage.join(out, 'loop.json')} in {time.perf_counter() - started:.0f} s")
    return 0
