"""``encore cluster validate | proof``: going from one machine to a Ray cluster.

validate  checks cluster.yaml against Ray's cluster-launcher schema and Encore's rules,
          serve_config.yaml against Serve's schema (and that its replicas fit the node
          types), and that the storage URIs are reachable; exit 1 listing every problem.
proof     runs Encore on a local fake multi-node cluster with Ray's autoscaler (stages in
          rl/cluster/proof.py, the cluster's start/stop/observation in rl/cluster/fake.py):
          serve + load, a training job, the registry, teardown.

    encore cluster validate cluster.yaml serve_config.yaml
    encore cluster proof            # about 5-10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from rl import paths
from rl.cli.config_options import config_options
from rl.cli.errors import CommandError
from rl.cli.options import add_catalog_option, add_command
from rl.cli.paths_check import require_path, require_writable


def register(subparsers: argparse._SubParsersAction) -> None:
    cluster = subparsers.add_parser(
        "cluster", help="validate cluster/serve configs; prove the cluster path locally"
    )
    commands = cluster.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND")

    validate = add_command(commands, "validate", run_validate)
    validate.add_argument(
        "cluster_yaml", nargs="?", default="cluster.yaml", help="default: cluster.yaml"
    )
    validate.add_argument(
        "serve_config", nargs="?", default="serve_config.yaml", help="default: serve_config.yaml"
    )
    add_catalog_option(validate)
    validate.add_argument(
        "--logs", default=None, help=f"feedback log URI (default {paths.default_log_uri()})"
    )
    validate.add_argument(
        "--registry",
        default=None,
        help=f"model registry URI (default {paths.default_registry_uri()})",
    )
    validate.add_argument(
        "--no-import-check",
        action="store_true",
        help="do not check that serve_config's import_path is importable here",
    )

    proof = add_command(commands, "proof", run_proof_command)
    config_options(
        proof, "rl.cluster.proof:ProofConfig", attr="proof_config", title="proof (ProofConfig)",
        flags={
            "embedding_uri": "--embedding", "load_concurrency": "--concurrency",
            "train_iterations": "--iterations", "sim_users": "--users", "sim_days": "--days",
        },
    )  # fmt: skip
    proof.add_argument("--work-dir", default=None, help="keep cluster logs and data here")
    cluster.set_defaults(func=lambda args: (cluster.print_help(), 2)[1])


def _require_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise CommandError(f"{path} does not exist ({what})", "pass the path of the YAML file")
    if os.path.isdir(path):
        raise CommandError(f"{path} is a folder; {what} is a YAML file", "pass the file itself")


def run_validate(args: argparse.Namespace) -> int:
    """check cluster.yaml, serve_config.yaml and storage URIs before starting anything"""
    from rl.cluster.config_check import ConfigCheckError, validate_deployment

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)
    _require_file(args.cluster_yaml, "CLUSTER_YAML")
    _require_file(args.serve_config, "SERVE_CONFIG")
    uris = {
        "catalog": args.catalog or paths.default_catalog_uri(),
        "logs": args.logs or paths.default_log_uri(),
        "registry": args.registry or paths.default_registry_uri(),
    }
    try:
        check = validate_deployment(
            args.cluster_yaml, args.serve_config, uris, check_imports=not args.no_import_check
        )
    except ConfigCheckError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    spec = check.cluster
    assert spec is not None
    print(
        f"{args.cluster_yaml}: cluster {spec.cluster_name!r} on {spec.provider_type}, "
        f"max {spec.max_workers} workers, idle timeout {spec.idle_timeout_minutes:g} min"
    )
    for t in spec.node_types:
        bounds = "head" if t.is_head else f"{t.min_workers}..{t.max_workers} workers"
        print(f"  {t.name:<18} {bounds:<16} {t.resources}")
    print(f"  at full scale: {spec.max_total('CPU'):g} CPUs")
    for warning in spec.warnings:
        print(f"  warning: {warning}")
    print(f"{args.serve_config}: applications {check.applications}")
    for role, uri in check.storage.items():
        print(f"  storage {role}: {uri} reachable")
    print("ok")
    return 0


def run_proof_command(args: argparse.Namespace) -> int:
    """run Encore on a local fake multi-node Ray cluster with the autoscaler

    Start a fake multi-node cluster derived from cluster.yaml (Ray's fake_multinode provider),
    serve deploy the app, drive loopback load, submit simulate/convert/train jobs, check the
    registry, tear everything down.
    """
    from rl.cluster.config_check import ConfigCheckError
    from rl.cluster.proof import print_report, run_proof

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)
    config = args.proof_config
    for option, path in (
        ("--cluster-yaml", config.cluster_yaml),
        ("--serve-config", config.serve_config),
    ):
        _require_file(path, option)
    if config.embedding_uri:
        require_path(
            config.embedding_uri, "--embedding", "train one: encore train-embedding --out DIR"
        )
    if args.work_dir:
        require_writable(args.work_dir, "--work-dir")
    try:
        report = run_proof(config, work_dir=args.work_dir)
    except ConfigCheckError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    print_report(report)
    return 0 if report.registry_versions else 1
