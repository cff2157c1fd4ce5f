"""``encore train | finetune``: offline training of the policy on RLlib, registered as versions.

train     offline PPO (or the MARWIL / BC baselines) on RLlib from logged decisions,
          registered as a new model version;
finetune  continue the production version on feedback logged since it was trained.
(``encore models | promote | evaluate`` are in ``rl/cli/models.py``.)

Example (synthetic data, a couple of minutes on 2 cores):
    encore train --synthetic-sessions 400 --iterations 10
    encore train --data s3://bucket/steps --work-dir s3://bucket/runs/ppo-1 --resume-run \
        --num-learners 4 --learner-resource encore_learner=1   # a resubmittable cluster job
    encore models
    encore promote v0001

The hyper-parameter options are generated from ``rl.training.config.TrainConfig`` (its
field docs are their help), so the two cannot drift.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from rl import storage
from rl.cli.config_options import config_options
from rl.cli.errors import CommandError
from rl.cli.options import add_command, add_registry_option, add_torch_threads_option, registry_from
from rl.cli.paths_check import require_offline_steps, require_writable

if TYPE_CHECKING:
    from rl.registry import ModelRegistry
    from rl.training.train import IterationReport

TRAIN_CONFIG = "rl.training.config:TrainConfig"
# Older spellings of the generated options stay accepted (the second flag of each pair).
TRAIN_FLAGS = {
    "lambda_": "--lambda",
    "hidden_sizes": ("--hidden", "--hidden-sizes"),
    "train_batch_size": ("--batch-size", "--train-batch-size"),
    "custom_resources_per_learner": "--learner-resource",
}
TRAIN_HELPS = {
    "custom_resources_per_learner": "custom Ray resource each remote learner requests, e.g. "
    "encore_learner=1 (cluster.yaml's train_worker offers encore_learner); repeatable",
}
VERSION_PATTERN = re.compile(r"^v\d+$")


def default_steps_uri() -> str:
    from rl import paths

    return storage.join(paths.data_dir(), "offline", "steps")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = add_command(subparsers, "train", run_train)
    _add_train_data_options(train)
    config_options(
        train, TRAIN_CONFIG, attr="train_config", title="training (TrainConfig)",
        flags=TRAIN_FLAGS, helps=TRAIN_HELPS, choices={"algo": "ALGORITHMS"},
    )  # fmt: skip
    config_options(
        train, "rl.decision.observation:ObservationLayout", attr="layout",
        title="observation layout (used only when the data has no _layout.json)",
        only=("k", "latent_dim"),
    )  # fmt: skip
    _add_run_folder_options(train)
    train.add_argument("--promote", action="store_true", help="promote the new version")
    add_torch_threads_option(train)
    add_registry_option(train)

    finetune = add_command(subparsers, "finetune", run_finetune)
    add_steps_option(finetune, " (all of it: files the parent saw are skipped)")
    finetune.add_argument("--iterations", type=_positive_int("--iterations"), default=5,
                          help="training iterations (default: 5)")  # fmt: skip
    finetune.add_argument("--lr", type=float, default=None,
                          help="learning rate (default: the parent's)")  # fmt: skip
    finetune.add_argument(
        "--work-dir", default=None,
        help="run folder for episodes and checkpoints (default: a new folder under <data>/runs)",
    )  # fmt: skip
    finetune.add_argument("--promote", action="store_true", help="promote the new version")
    from rl.cli.models import add_gate_options

    add_gate_options(finetune)  # the gate --promote goes through
    add_torch_threads_option(finetune)
    add_registry_option(finetune)


def _positive_int(flag: str):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 1, got {value}")
        return value

    return convert


def add_steps_option(parser: argparse.ArgumentParser, note: str = "") -> None:
    """``--data``: the offline steps to train on (``default_steps_uri`` when not given)."""
    parser.add_argument(
        "--data",
        default=None,
        help=f"offline steps URI: the --out of `encore offline-steps`{note} "
        "(default: <data>/offline/steps)",
    )


def _add_train_data_options(train: argparse.ArgumentParser) -> None:
    add_steps_option(train)
    train.add_argument(
        "--synthetic-sessions", type=int, default=0,
        help="ignore --data and train on N generated sessions (a demo/smoke run) (default: 0)",
    )  # fmt: skip


def _add_run_folder_options(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--resume", default=None, help="registry VERSION or algorithm checkpoint PATH to continue"
    )
    train.add_argument(
        "--work-dir", default=None,
        help="run folder URI for episodes and checkpoints (default: a new folder under "
        "<data>/runs); fix it so a resubmitted job can --resume-run",
    )  # fmt: skip
    train.add_argument(
        "--resume-run", action="store_true",
        help="continue the run in --work-dir from its latest checkpoint up to --iterations "
        "in total (starts afresh if it has none, so a resubmitted job can keep the flag)",
    )  # fmt: skip


def print_iteration(report: IterationReport) -> None:
    losses = " ".join(f"{k}={v:.4f}" for k, v in report.losses.items())
    print(
        f"iter {report.iteration:3d}  {losses}  {report.samples_per_s:,.0f} samples/s",
        flush=True,
    )


def start_training_ray(
    num_learners: int, learner_resources: dict[str, float] | None = None
) -> None:
    """Ray for training: locally, one CPU per learner plus the driver, and the learners'
    custom resources offered too (so the cluster command also runs on one machine)."""
    from rl.cluster.ray_runtime import start_ray

    start_ray(
        num_cpus=max(2, num_learners + 1),
        resources={
            name: amount * max(1, num_learners)
            for name, amount in (learner_resources or {}).items()
        },
    )


def _resume_target(args: argparse.Namespace, registry: ModelRegistry) -> tuple[Any, Any]:
    """(parent version, checkpoint URI) of ``--resume``, checked before any work."""
    if not args.resume:
        return None, None
    versions = [v.version for v in registry.list_versions()]
    if args.resume in versions:
        return args.resume, registry.checkpoint_uri(args.resume)
    if VERSION_PATTERN.match(args.resume) or not storage.exists(args.resume):
        raise CommandError(
            f"--resume {args.resume}: no such version in {registry.uri} and no such checkpoint path",
            f"versions there: {', '.join(versions) or 'none'} (see `encore models`)",
        )
    return None, args.resume


def _training_data(args: argparse.Namespace, work_uri: str, layout: Any) -> tuple[list[str], Any]:
    """The parquet files to train on and their observation layout."""
    from rl.feedback.offline_steps_files import parquet_files, resolve_layout

    if args.synthetic_sessions:
        from rl.training.synthetic import synthetic_offline_steps

        data_uri = storage.join(work_uri, "synthetic_steps")
        storage.makedirs(data_uri)
        frame = synthetic_offline_steps(
            args.synthetic_sessions, layout=layout, seed=args.train_config.seed
        )
        storage.write_bytes(storage.join(data_uri, "part-0.parquet"), frame.to_parquet())
        return parquet_files(data_uri), layout
    data_uri = args.data or default_steps_uri()
    files = require_offline_steps(data_uri, "--data")
    return files, resolve_layout(data_uri, layout)


def run_train(args: argparse.Namespace) -> int:
    """train the actor-critic offline on RLlib (offline PPO, MARWIL or BC) and register it

    Train on row-per-step offline data (the --out of `encore offline-steps`, read through Ray
    Data); prints iteration, losses and samples/s; registers the checkpoint as a new version in
    the model registry.
    """
    from rl.training.lifecycle import default_work_uri, train_and_register

    if args.resume_run and not args.work_dir:
        raise CommandError(
            "--resume-run needs --work-dir (the run folder to resume)",
            "pass the --work-dir of the run to continue",
        )
    config = args.train_config
    registry = registry_from(args)
    require_writable(registry.uri, "--registry")
    work_uri = args.work_dir or default_work_uri(config.algo)
    require_writable(work_uri, "--work-dir")
    parent, resume_checkpoint = _resume_target(args, registry)
    files, layout = _training_data(args, work_uri, args.layout)
    print(f"training {config.algo} on {len(files)} file(s)", flush=True)
    args.interrupt_hint = (
        f"checkpoints of this run are in {work_uri}; continue it with the same options plus "
        f"--work-dir {work_uri} --resume-run"
    )
    _set_torch_threads(args)
    start_training_ray(config.num_learners, config.custom_resources_per_learner)
    if args.resume_run:
        _print_resume_point(work_uri)
    try:
        entry = train_and_register(
            config, files, layout, registry, parent=parent, resume_checkpoint=resume_checkpoint,
            work_uri=work_uri, on_iteration=print_iteration, resume_run=args.resume_run,
        )  # fmt: skip
    except (FileExistsError, ValueError) as exc:
        raise CommandError(f"cannot train: {exc}") from None
    print(
        f"registered {entry.version} ({entry.algo}, {entry.data['rows']} decisions, "
        f"{entry.metrics['samples_per_s']:,.0f} samples/s) in {registry.uri}"
    )
    if args.promote:
        registry.promote(entry.version)
        print(f"production -> {entry.version}")
    return 0


def _print_resume_point(work_uri: str) -> None:
    from rl.training.train import latest_checkpoint

    latest = latest_checkpoint(work_uri)
    if latest is None:
        print(f"no checkpoint in {work_uri} yet: starting afresh", flush=True)
    else:
        print(
            f"resuming {work_uri} from iteration {latest['iteration']} ({latest['checkpoint']})",
            flush=True,
        )


def _set_torch_threads(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(max(1, args.torch_threads))


def run_finetune(args: argparse.Namespace) -> int:
    """continue the production version on feedback logged since it was trained

    Continue training the production version on the offline steps under --data that it has not
    seen (files it trained on are skipped), and register the result as its child version.
    """
    from rl.registry import RegistryError
    from rl.training.lifecycle import default_work_uri, finetune_production

    registry = registry_from(args, must_exist=True)
    if registry.production_version() is None:
        raise CommandError(
            f"no production version in {registry.uri} to fine-tune",
            "train one (`encore train`) and promote it (`encore promote VERSION`)",
        )
    data_uri = args.data or default_steps_uri()
    require_offline_steps(data_uri, "--data")
    work_uri = args.work_dir or default_work_uri("finetune")
    require_writable(work_uri, "--work-dir")
    _set_torch_threads(args)
    start_training_ray(0)
    try:
        entry = finetune_production(
            registry, data_uri, iterations=args.iterations, lr=args.lr, work_uri=work_uri,
            on_iteration=print_iteration,
        )  # fmt: skip
    except (RegistryError, ValueError) as exc:
        raise CommandError(f"cannot fine-tune: {exc}") from None
    print(f"registered {entry.version} (parent {entry.parent}, {entry.data['rows']} new decisions)")
    if args.promote:
        from rl.cli.models import promote_with_gate

        promote_with_gate(registry, entry.version, args)
        print(f"production -> {entry.version}")
    return 0
