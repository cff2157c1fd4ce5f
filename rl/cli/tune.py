"""``encore tune``: Ray Tune over offline PPO's settings, each trial judged by the DR
estimate on a held-out log (rl/training/tuning.py).

    encore tune --log data/logs/train --heldout data/logs/heldout --trials 8 --out data/tune
writes trials.csv / trials.md (every trial's settings and held-out DR with its interval)
and chosen.json (the winner, the defaults' estimate beside it) under --out.
"""

from __future__ import annotations

import argparse
import time

from rl import paths, storage
from rl.cli.config_options import config_options
from rl.cli.errors import CommandError
from rl.cli.paths_check import require_new_output, require_writable


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune",
        help="Ray Tune over offline PPO (lr, entropy, clip, gamma/lambda, reward weight), "
        "selected on held-out OPE",
        description="Fits the song table on --log, converts --log (once per reward weight) and "
        "--heldout to offline steps, then runs --trials Ray Tune trials: each trains offline "
        "PPO with sampled settings and is scored by the doubly-robust estimate of its greedy "
        "policy's reward per decision on --heldout (never on evaluation users). The first "
        "trial is TrainConfig's defaults. Writes trials.csv, trials.md and chosen.json.",
    )
    p.add_argument("--log", required=True, help="training decision log URI")
    p.add_argument(
        "--heldout", required=True, help="held-out decision log URI (other users or days)"
    )
    p.add_argument(
        "--out", default=None, help="output URI (default: <data>/tune/<time>); must not hold data"
    )
    config_options(
        p, "rl.training.tuning:TuneSettings", attr="settings", title="tuning (TuneSettings)"
    )
    p.set_defaults(func=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    import torch

    from rl.cli.train import start_training_ray
    from rl.feedback.log import decisions_uri
    from rl.training.tuning import run_tuning

    for flag, uri in (("--log", args.log), ("--heldout", args.heldout)):
        if not storage.exists(decisions_uri(uri)):
            raise CommandError(f"{flag} {uri}: no decision log there", "see `encore simulate`")
    torch.set_num_threads(1)
    out = args.out or storage.join(paths.data_dir(), "tune", time.strftime("%Y%m%d-%H%M%S"))
    require_writable(require_new_output(out, "--out"), "--out")
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    start_training_ray(0)
    report = run_tuning(args.settings, args.log, args.heldout, out, progress)
    chosen = report.chosen_json
    print(open(storage.resolve(storage.join(out, "trials.md"))[1]).read())
    print(f"chosen: {chosen['chosen']}")
    print(f"defaults: {chosen['defaults']}")
    print(
        "the chosen settings' interval lies above the defaults' estimate"
        if chosen["chosen_interval_above_defaults"]
        else "no trial's interval lies above the defaults' estimate (keep the defaults)"
    )
    print(
        f"wrote trials.csv, trials.md, chosen.json under {out} in {time.perf_counter() - started:.0f} s"
    )
    return 0
