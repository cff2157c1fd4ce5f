"""``encore models | promote | evaluate``: the registry's versions, production, and OPE.

models    the registry's versions, production marked (and a warning if it is broken);
promote   move the production pointer (atomic);
evaluate  off-policy estimates on held-out offline steps, and (--simulate-users) the simulator.
"""

from __future__ import annotations

import argparse
import sys
import time

from rl.cli.config_options import config_options
from rl.cli.errors import CommandError, UsageError
from rl.cli.options import add_command, add_registry_option, registry_from
from rl.cli.paths_check import require_offline_steps, require_writable


def register(subparsers: argparse._SubParsersAction) -> None:
    models = add_command(subparsers, "models", run_models)
    add_registry_option(models)

    promote = add_command(subparsers, "promote", run_promote)
    promote.add_argument("version", help="a version listed by `encore models`, e.g. v0001")
    add_gate_options(promote)
    add_registry_option(promote)

    evaluate = add_command(subparsers, "evaluate", run_evaluate)
    evaluate.add_argument("version", nargs="?", default=None, help="default: production")
    evaluate.add_argument(
        "--data", required=True, help="held-out offline steps URI (from `encore offline-steps`)"
    )
    evaluate.add_argument("--out", default=None, help="report directory (markdown + PNG)")
    evaluate.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples, >= 10 (default: 1000)"
    )
    config_options(
        evaluate, "rl.evaluation.evaluate_version:SimulatorCheck", attr="simulator_check",
        title="simulator check (SimulatorCheck)",
        flags={"users": "--simulate-users", "days": "--simulate-days", "seed": "--simulator-seed"},
    )  # fmt: skip
    add_registry_option(evaluate)


def run_models(args: argparse.Namespace) -> int:
    """list registered model versions

    List the registry's versions (algorithm, date, parent, rows, final loss); * marks
    production.
    """
    registry = registry_from(args, must_exist=True)
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
        gate = v.data.get("promotion_gate")
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(v.created_at))
        loss = v.metrics.get("final_total_loss", float("nan"))
        print(
            f"{marker}{v.version:<8} {v.algo:<12} {created:<17} {v.parent or '-':<8} "
            f"{int(v.data.get('rows', 0)):>9} {loss:>11.4f}" + _gate_cell(gate)
        )
    print("(* = production)")
    if production is not None:
        _warn_if_broken(registry, production)
    return 0


def _gate_cell(gate: dict | None) -> str:
    """The promotion gate's evidence: DR difference to production [95% CI] and verdict."""
    if not gate:
        return ""
    verdict = "passed" if gate["passed"] else ("forced" if gate["forced"] else "refused")
    low, high = gate["difference_ci"]
    return (
        f"  gate vs {gate['production']}: {gate['difference']:+.4f} "
        f"[{low:+.4f}, {high:+.4f}] {verdict}"
    )


def _warn_if_broken(registry, production: str) -> None:
    from rl.registry import RegistryError

    try:
        registry.verify(production)
    except (RegistryError, OSError, ValueError) as exc:
        print(f"warning: production {production} does not verify: {exc}", file=sys.stderr)


def run_promote(args: argparse.Namespace) -> int:
    """point production at a model version

    Move the registry's production pointer to VERSION (atomic); serving replicas follow it
    within seconds.
    """
    from rl.registry import RegistryError

    registry = registry_from(args, must_exist=True)
    try:
        promote_with_gate(registry, args.version, args)
    except RegistryError as exc:
        raise CommandError(f"refused: {exc}", "see the versions with `encore models`") from None
    print(f"production -> {args.version}")
    return 0


def add_gate_options(parser: argparse.ArgumentParser) -> None:
    """The promotion gate's options (rl/evaluation/promotion_gate.py)."""
    parser.add_argument(
        "--heldout", default=None,
        help="held-out offline steps the gate compares the version with production on (DR)",
    )  # fmt: skip
    config_options(
        parser, "rl.evaluation.promotion_gate:GateConfig", attr="gate_config",
        title="promotion gate (GateConfig)", only=("margin",),
    )  # fmt: skip
    parser.add_argument(
        "--force", action="store_true", help="promote even when the gate refuses (kept on record)"
    )


def promote_with_gate(registry, version: str, args: argparse.Namespace) -> None:
    from rl.evaluation.promotion_gate import promote_through_gate

    if args.heldout is not None:
        require_offline_steps(args.heldout, "--heldout")
    try:
        promote_through_gate(registry, version, args.heldout, args.gate_config.margin, args.force)
    except PermissionError as exc:
        raise CommandError(f"refused: {exc}") from None


def _check_layouts_match(registry, version: str | None, data_uri: str) -> None:
    """The held-out data's candidates per decision (k) and latent size are the version's."""
    from rl.feedback.offline_steps_files import resolve_layout
    from rl.registry import RegistryError

    try:
        name = version or registry.production_version()
        if name is None:
            return  # evaluate_version names the missing production version
        trained = registry.get(name).observation_layout
    except (RegistryError, KeyError, AttributeError):
        return
    data = resolve_layout(data_uri, trained)
    for what, have, need in (
        ("candidates per decision (k)", data.k, trained.k),
        ("latent size", data.latent_dim, trained.latent_dim),
    ):
        if have != need:
            raise CommandError(
                f"the data under {data_uri} has {what} {have}; {name} was trained with {need}",
                "make held-out steps with the version's settings (`encore offline-steps --k ...`)",
            )


def run_evaluate(args: argparse.Namespace) -> int:
    """off-policy estimates (IPS, SNIPS, DR with 95% CIs) of a version on held-out logs

    Off-policy estimates (IPS, SNIPS, doubly robust, 95% bootstrap intervals) of a registered
    version on held-out offline steps; with --simulate-users also runs it against the logging
    policy in the simulator. Writes markdown and a plot to --out.
    """
    from rl.evaluation.evaluate_version import evaluate_version
    from rl.registry import RegistryError

    if args.bootstrap < 10:
        raise UsageError(f"--bootstrap must be >= 10, got {args.bootstrap}")
    registry = registry_from(args, must_exist=True)
    require_offline_steps(args.data, "--data")
    _check_layouts_match(registry, args.version, args.data)
    if args.out:
        require_writable(args.out, "--out")
    try:
        report = evaluate_version(
            registry, args.version, args.data, out_uri=args.out, n_bootstrap=args.bootstrap,
            simulator=args.simulator_check,
        )  # fmt: skip
    except RegistryError as exc:
        raise CommandError(f"refused: {exc}", "see the versions with `encore models`") from None
    except ValueError as exc:  # e.g. the data's layout differs from the version's
        raise CommandError(f"cannot evaluate: {exc}") from None
    print(report.markdown)
    print(f"wrote {report.markdown_uri} and {report.plot_uri}")
    return 0
