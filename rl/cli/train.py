"""``encore train | models | promote | evaluate | finetune``: the policy's life cycle.

train     offline PPO (or the MARWIL / BC baselines) on RLlib from logged decisions,
          registered as a new model version;
models    the registry's versions, production marked;
promote   move the production pointer (atomic);
evaluate  off-policy estimates on held-out logs, and (--simulate-users) the simulator;
finetune  continue the production version on feedback logged since it was trained.

Example (synthetic data, a couple of minutes on 2 cores):
    encore train --synthetic-sessions 400 --iterations 10
    encore train --data s3://bucket/steps --work-dir s3://bucket/runs/ppo-1 --resume-run \
        --num-learners 4 --learner-resource encore_learner=1   # a resubmittable cluster job
    encore models
    encore promote v0001
"""

from __future__ import annotations

import argparse
import sys

from rl import paths, storage
from rl.decision.observation import ObservationLayout
from rl.registry import ModelRegistry, RegistryError
from rl.training.config import ALGORITHMS, TrainConfig
from rl.training.train import IterationReport


def _registry_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        default=None,
        help=f"model registry URI (default {paths.default_registry_uri()}; s3://... works)",
    )


def _torch_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads of the local learner (default 1: with Ray's data "
        "workers on a few cores, more threads oversubscribe them and run ~5x slower)",
    )


def _set_torch_threads(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(max(1, args.torch_threads))


def _registry(args: argparse.Namespace) -> ModelRegistry:
    return ModelRegistry(args.registry or paths.default_registry_uri())


def default_steps_uri() -> str:
    return storage.join(paths.data_dir(), "offline", "steps")


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    train = subparsers.add_parser(
        "train",
        help="train the actor-critic offline on RLlib (offline PPO, MARWIL or BC) and register it",
        description="Train on row-per-step offline data (RLlib offline columns, see "
        "rl/feedback/offline_steps.py) read through Ray Data; prints iteration, losses and samples/s; "
        "registers the checkpoint as a new version.",
    )
    train.add_argument("--algo", choices=ALGORITHMS, default=defaults.algo)
    train.add_argument(
        "--data", default=None, help=f"offline steps URI (default {default_steps_uri()})"
    )
    train.add_argument(
        "--synthetic-sessions",
        type=int,
        default=0,
        help="ignore --data and train on N generated sessions (a demo/smoke run)",
    )
    train.add_argument("--iterations", type=int, default=defaults.iterations)
    train.add_argument("--lr", type=float, default=defaults.lr)
    train.add_argument("--gamma", type=float, default=defaults.gamma)
    train.add_argument("--lambda", dest="lambda_", type=float, default=defaults.lambda_)
    train.add_argument("--clip", type=float, default=defaults.clip)
    train.add_argument("--vf-coeff", type=float, default=defaults.vf_coeff)
    train.add_argument("--entropy-coeff", type=float, default=defaults.entropy_coeff)
    train.add_argument("--hidden", type=int, nargs="+", default=list(defaults.hidden_sizes))
    train.add_argument("--batch-size", type=int, default=defaults.train_batch_size)
    train.add_argument("--updates-per-iteration", type=int, default=defaults.updates_per_iteration)
    train.add_argument(
        "--num-learners", type=int, default=defaults.num_learners, help="0 = in the driver"
    )
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument(
        "--k", type=int, default=4, help="candidates (if no _layout.json with the data)"
    )
    train.add_argument("--latent-dim", type=int, default=5, help="latent size (idem)")
    train.add_argument(
        "--resume", default=None, help="registry VERSION or algorithm checkpoint PATH to continue"
    )
    train.add_argument(
        "--work-dir",
        default=None,
        help="run folder URI for episodes and checkpoints (default: a new folder under "
        "$ENCORE_DATA/runs); fix it so a resubmitted job can --resume-run",
    )
    train.add_argument(
        "--resume-run",
        action="store_true",
        help="continue the run in --work-dir from its latest checkpoint up to --iterations "
        "in total (starts afresh if it has none, so a resubmitted job can keep the flag)",
    )
    train.add_argument(
        "--checkpoint-every",
        type=int,
        default=defaults.checkpoint_every,
        help="save a resumable checkpoint every N iterations (and after the last)",
    )
    train.add_argument(
        "--learner-resource",
        action="append",
        default=[],
        metavar="NAME=AMOUNT",
        help="custom Ray resource each remote learner requests, e.g. encore_learner=1 "
        "(cluster.yaml's train_worker offers encore_learner); repeatable",
    )
    train.add_argument("--promote", action="store_true", help="promote the new version")
    _torch_threads_arg(train)
    _registry_arg(train)
    train.set_defaults(func=run_train)

    models = subparsers.add_parser("models", help="list registered model versions")
    _registry_arg(models)
    models.set_defaults(func=run_models)

    promote = subparsers.add_parser("promote", help="point production at a model version")
    promote.add_argument("version")
    _registry_arg(promote)
    promote.set_defaults(func=run_promote)

    finetune = subparsers.add_parser(
        "finetune",
        help="continue the production version on feedback logged since it was trained",
    )
    finetune.add_argument(
        "--data", default=None, help="offline steps URI (all of it; seen files skipped)"
    )
    finetune.add_argument("--iterations", type=int, default=5)
    finetune.add_argument("--lr", type=float, default=None, help="default: the parent's")
    finetune.add_argument("--promote", action="store_true", help="promote the new version")
    _torch_threads_arg(finetune)
    _registry_arg(finetune)
    finetune.set_defaults(func=run_finetune)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="off-policy estimates (IPS, SNIPS, DR with 95%% CIs) of a version on held-out logs",
    )
    evaluate.add_argument("version", nargs="?", default=None, help="default: production")
    evaluate.add_argument("--data", required=True, help="held-out offline steps URI")
    evaluate.add_argument("--out", default=None, help="report directory (markdown + PNG)")
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    evaluate.add_argument(
        "--simulate-users",
        type=int,
        default=0,
        help="also run the policies against the logging policy in the simulator with N users",
    )
    evaluate.add_argument("--simulate-days", type=int, default=60, help="simulated days")
    evaluate.add_argument(
        "--simulator-seed", type=int, default=0, help="world seed (use the one the logs came from)"
    )
    _registry_arg(evaluate)
    evaluate.set_defaults(func=run_evaluate)


def _print_iteration(report: IterationReport) -> None:
    losses = " ".join(f"{k}={v:.4f}" for k, v in report.losses.items())
    print(
        f"iter {report.iteration:3d}  {losses}  {report.samples_per_s:,.0f} samples/s",
        flush=True,
    )


def _start_ray(num_learners: int, learner_resources: dict[str, float] | None = None) -> None:
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


def parse_resources(items: list[str]) -> dict[str, float]:
    """``["encore_learner=1", ...]`` -> ``{"encore_learner": 1.0}``."""
    resources: dict[str, float] = {}
    for item in items:
        name, sep, amount = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            resources[name.strip()] = float(amount)
        except ValueError:
            raise ValueError(f"--learner-resource takes NAME=AMOUNT, got {item!r}") from None
    return resources


def run_train(args: argparse.Namespace) -> int:
    from rl.feedback.offline_steps_files import parquet_files, resolve_layout
    from rl.training.lifecycle import default_work_uri, train_and_register

    if args.resume_run and not args.work_dir:
        print("--resume-run needs --work-dir (the run folder to resume)", file=sys.stderr)
        return 2
    try:
        learner_resources = parse_resources(args.learner_resource)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2

    config = TrainConfig(
        algo=args.algo,
        iterations=args.iterations,
        lr=args.lr,
        gamma=args.gamma,
        lambda_=args.lambda_,
        clip=args.clip,
        vf_coeff=args.vf_coeff,
        entropy_coeff=args.entropy_coeff,
        hidden_sizes=tuple(args.hidden),
        train_batch_size=args.batch_size,
        updates_per_iteration=args.updates_per_iteration,
        num_learners=args.num_learners,
        custom_resources_per_learner=learner_resources,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )
    layout = ObservationLayout(k=args.k, latent_dim=args.latent_dim)
    registry = _registry(args)
    work_uri = args.work_dir or default_work_uri(config.algo)
    if args.synthetic_sessions:
        from rl.training.synthetic import synthetic_offline_steps

        data_uri = storage.join(work_uri, "synthetic_steps")
        storage.makedirs(data_uri)
        frame = synthetic_offline_steps(args.synthetic_sessions, layout=layout, seed=config.seed)
        storage.write_bytes(storage.join(data_uri, "part-0.parquet"), frame.to_parquet())
    else:
        data_uri = args.data or default_steps_uri()
        layout = resolve_layout(data_uri, layout)
    parent, resume_checkpoint = None, None
    if args.resume:
        if args.resume in {v.version for v in registry.list_versions()}:
            parent, resume_checkpoint = args.resume, registry.checkpoint_uri(args.resume)
        else:
            resume_checkpoint = args.resume
    files = parquet_files(data_uri)
    print(f"training {config.algo} on {len(files)} file(s) under {data_uri}", flush=True)
    _set_torch_threads(args)
    _start_ray(config.num_learners, config.custom_resources_per_learner)
    if args.resume_run:
        from rl.training.train import latest_checkpoint

        latest = latest_checkpoint(work_uri)
        if latest is None:
            print(f"no checkpoint in {work_uri} yet: starting afresh", flush=True)
        else:
            print(
                f"resuming {work_uri} from iteration {latest['iteration']} "
                f"({latest['checkpoint']})",
                flush=True,
            )
    try:
        entry = train_and_register(
            config,
            files,
            layout,
            registry,
            parent=parent,
            resume_checkpoint=resume_checkpoint,
            work_uri=work_uri,
            on_iteration=_print_iteration,
            resume_run=args.resume_run,
        )
    except (FileExistsError, ValueError) as exc:
        print(f"cannot train: {exc}", file=sys.stderr)
        return 1
    print(
        f"registered {entry.version} ({entry.algo}, {entry.data['rows']} decisions, "
        f"{entry.metrics['samples_per_s']:,.0f} samples/s) in {registry.uri}"
    )
    if args.promote:
        registry.promote(entry.version)
        print(f"production -> {entry.version}")
    return 0


def run_models(args: argparse.Namespace) -> int:
    import time

    registry = _registry(args)
    versions = registry.list_versions()
    if not versions:
        print(f"no versions in {registry.uri}")
        return 0
    production = registry.production_version()
    print(
        f"{'':2}{'version':<8} {'algo':<12} {'created':<17} {'parent':<8} {'rows':>9} {'final loss':>11}"
    )
    for v in versions:
        marker = "* " if v.version == production else "  "
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(v.created_at))
        loss = v.metrics.get("final_total_loss", float("nan"))
        print(
            f"{marker}{v.version:<8} {v.algo:<12} {created:<17} {v.parent or '-':<8} "
            f"{int(v.data.get('rows', 0)):>9} {loss:>11.4f}"
        )
    print("(* = production)")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        registry.promote(args.version)
    except RegistryError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(f"production -> {args.version}")
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from rl.training.lifecycle import finetune_production

    registry = _registry(args)
    _set_torch_threads(args)
    _start_ray(0)
    try:
        entry = finetune_production(
            registry,
            args.data or default_steps_uri(),
            iterations=args.iterations,
            lr=args.lr,
            on_iteration=_print_iteration,
        )
    except (RegistryError, ValueError) as exc:
        print(f"cannot fine-tune: {exc}", file=sys.stderr)
        return 1
    print(f"registered {entry.version} (parent {entry.parent}, {entry.data['rows']} new decisions)")
    if args.promote:
        registry.promote(entry.version)
        print(f"production -> {entry.version}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from rl.evaluation.evaluate_version import evaluate_version

    registry = _registry(args)
    try:
        report = evaluate_version(
            registry,
            args.version,
            args.data,
            out_uri=args.out,
            n_bootstrap=args.bootstrap,
            simulate_users=args.simulate_users,
            simulate_days=args.simulate_days,
            simulator_seed=args.simulator_seed,
        )
    except RegistryError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(report.markdown)
    print(f"wrote {report.markdown_uri} and {report.plot_uri}")
    return 0
