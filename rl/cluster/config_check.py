"""Cluster and deployment configs, checked before anything starts.

Where it sits: ``encore cluster validate`` (and the local proof, ``encore cluster proof``)
call ``validate_deployment`` before ``ray up`` / ``serve deploy`` / ``ray job submit``:

    cluster.yaml ──► Ray's own JSON schema + launcher rules ──► Encore sanity rules ─┐
    serve_config.yaml ──► Serve's ServeDeploySchema ──► import paths, fit on nodes ──┼─► one error
    storage URIs (catalog, logs, registry) ──► resolved + probed via rl.storage ─────┘   listing all

Every problem is collected, then raised once as ``ConfigCheckError`` with one line per
problem, so a bad config fails in seconds with everything wrong in it, not half-way into a
20-minute cluster launch. The storage probes are rl/cluster/storage_check.py; the fake
multi-node config derived from the same cluster.yaml is rl/cluster/fake_config.py. Pure
Python: nothing here starts Ray.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from rl import storage
from rl.cluster.storage_check import (
    check_storage,
    default_storage_uris,
    storage_uris_in_serve_config,
)

HEAD_NODE_TYPE = "ray.head.default"
"""The head type name Ray's fake multi-node provider hard-codes; cluster.yaml uses it too so
that the fake config keeps the real node type names."""

SERVE_DEFAULT_REPLICA_CPUS = 1.0
"""A Serve replica's CPU request when ray_actor_options does not say (Serve's default)."""


class ConfigCheckError(ValueError):
    """One or more configs or storage locations are invalid; ``problems`` lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) found before starting anything:\n"
            + "\n".join(f"  - {p}" for p in self.problems)
        )


@dataclass(frozen=True)
class NodeTypeSpec:
    """One entry of ``available_node_types`` as the autoscaler will see it."""

    name: str
    resources: dict[str, float]
    """Logical resources a node of this type offers (CPU, GPU, memory bytes, custom)."""
    min_workers: int
    max_workers: int
    is_head: bool


@dataclass(frozen=True)
class ClusterSpec:
    """The validated cluster.yaml, reduced to what scheduling checks need."""

    cluster_name: str
    provider_type: str
    head_node_type: str
    max_workers: int
    """Global cap on worker nodes (all types together)."""
    idle_timeout_minutes: float
    node_types: tuple[NodeTypeSpec, ...]
    warnings: tuple[str, ...] = ()

    @property
    def worker_types(self) -> tuple[NodeTypeSpec, ...]:
        return tuple(t for t in self.node_types if not t.is_head)

    def max_total(self, resource: str) -> float:
        """The most of ``resource`` the cluster can offer at full scale."""
        head = sum(t.resources.get(resource, 0.0) for t in self.node_types if t.is_head)
        workers = sorted(
            (
                t.resources.get(resource, 0.0)
                for t in self.worker_types
                for _ in range(t.max_workers)
            ),
            reverse=True,
        )
        return head + sum(workers[: self.max_workers])


def load_yaml(uri: str) -> dict[str, Any]:
    """Parse a YAML mapping from a URI; raises ConfigCheckError with the reason."""
    try:
        loaded = yaml.safe_load(storage.read_bytes(uri).decode("utf-8"))
    except storage.StorageError as exc:
        raise ConfigCheckError([f"{uri}: cannot read: {exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigCheckError([f"{uri}: not valid YAML: {exc}"]) from exc
    if not isinstance(loaded, dict):
        raise ConfigCheckError([f"{uri}: must be a YAML mapping, got {type(loaded).__name__}"])
    return loaded


# --- cluster.yaml -------------------------------------------------------------------------


def _ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def _schema_problems(config: Mapping[str, Any], source: str) -> list[str]:
    """Every violation of Ray's cluster-launcher JSON schema, with its path."""
    import jsonschema

    validator = jsonschema.Draft7Validator(_ray_schema())
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(f"{source}: {where}: {error.message} (Ray cluster schema)")
    return problems


def _ray_launcher_problems(config: Mapping[str, Any], source: str) -> list[str]:
    """What ``ray up`` itself would refuse: defaults filled in, then Ray's validate_config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        prepared = prepare_config(copy.deepcopy(dict(config)))
    except FileNotFoundError:
        # The PyPI wheel lacks the defaults file of some providers (fake_multinode); our
        # generated configs are complete, so validate them as they are.
        prepared = copy.deepcopy(dict(config))
    except Exception as exc:  # Ray raises ValueError/NotImplementedError/KeyError here
        return [f"{source}: ray up would refuse it: {exc}"]
    try:
        validate_config(prepared)
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc)
        return [f"{source}: ray up would refuse it: {message.splitlines()[0]}"]
    return []


def _node_type_specs(config: Mapping[str, Any]) -> list[NodeTypeSpec]:
    head = config.get("head_node_type")
    specs = []
    for name, entry in (config.get("available_node_types") or {}).items():
        entry = entry or {}
        resources = {k: float(v) for k, v in (entry.get("resources") or {}).items()}
        default_max = 0 if name == head else int(config.get("max_workers", 2))
        specs.append(
            NodeTypeSpec(
                name=name,
                resources=resources,
                min_workers=int(entry.get("min_workers", 0)),
                max_workers=int(entry.get("max_workers", default_max)),
                is_head=name == head,
            )
        )
    return specs


def _encore_problems(
    config: Mapping[str, Any], specs: list[NodeTypeSpec], source: str
) -> tuple[list[str], list[str]]:
    """Encore's own rules on top of Ray's: (problems, warnings)."""
    problems: list[str] = []
    warnings: list[str] = []
    head = config.get("head_node_type")
    names = {s.name for s in specs}
    if head not in names:
        problems.append(
            f"{source}: head_node_type {head!r} is not one of available_node_types {sorted(names)}"
        )
    global_max = int(config.get("max_workers", 2))
    for spec in specs:
        where = f"{source}: available_node_types.{spec.name}"
        if spec.min_workers < 0:
            problems.append(f"{where}.min_workers must be >= 0, got {spec.min_workers}")
        if spec.max_workers < spec.min_workers:
            problems.append(
                f"{where}: max_workers ({spec.max_workers}) must be >= min_workers ({spec.min_workers})"
            )
        if "CPU" not in spec.resources:
            problems.append(
                f"{where}.resources must declare CPU (the autoscaler plans with it; Encore's "
                "fit checks and the fake proof cluster need it without a cloud API)"
            )
        if not spec.is_head and spec.max_workers > global_max:
            warnings.append(
                f"{where}.max_workers ({spec.max_workers}) exceeds the global max_workers "
                f"({global_max}); the global cap wins"
            )
    workers = [s for s in specs if not s.is_head]
    if not any(s.max_workers >= 1 for s in workers):
        problems.append(
            f"{source}: no worker node type can launch (every worker max_workers is 0): "
            "the autoscaler would have nothing to add"
        )
    if sum(s.min_workers for s in workers) > global_max:
        problems.append(
            f"{source}: the sum of min_workers ({sum(s.min_workers for s in workers)}) exceeds "
            f"the global max_workers ({global_max})"
        )
    idle = config.get("idle_timeout_minutes")
    if idle is None or float(idle) <= 0:
        problems.append(
            f"{source}: idle_timeout_minutes must be set and > 0 (idle workers are never "
            f"removed otherwise), got {idle!r}"
        )
    provider = (config.get("provider") or {}).get("type")
    if provider not in (None, "fake_multinode", "local"):
        start = " ".join(config.get("head_start_ray_commands") or [])
        if "--autoscaling-config" not in start:
            problems.append(
                f"{source}: head_start_ray_commands must start Ray with "
                "--autoscaling-config=~/ray_bootstrap_config.yaml, or nothing autoscales"
            )
        for remote, local in (config.get("file_mounts") or {}).items():
            if not os.path.exists(os.path.expanduser(str(local))):
                hint = (
                    " (create it with `ray get-auth-token --generate`)"
                    if "auth_token" in str(local)
                    else ""
                )
                problems.append(
                    f"{source}: file_mounts[{remote!r}]: local source {local!r} does not exist "
                    f"(relative to {os.getcwd()}, where `ray up` resolves it){hint}"
                )
        setup = " ".join(config.get("setup_commands") or [])
        if "make install" not in setup and "pip install" not in setup:
            problems.append(
                f"{source}: setup_commands must install Encore (`make install` or `pip install`) "
                "so every node can import rl/ and services/"
            )
    return problems, warnings


def check_cluster_config(
    config: Mapping[str, Any], source: str = "cluster.yaml"
) -> tuple[ClusterSpec | None, list[str]]:
    """Validate a cluster launcher config; (spec or None, problems). Never raises."""
    problems = _schema_problems(config, source)
    if problems:  # Ray's own rules assume a schema-valid config
        return None, problems
    problems += _ray_launcher_problems(config, source)
    specs = _node_type_specs(config)
    encore_problems, warnings = _encore_problems(config, specs, source)
    problems += [p for p in encore_problems if p not in problems]
    if problems:
        return None, problems
    spec = ClusterSpec(
        cluster_name=str(config["cluster_name"]),
        provider_type=str(config["provider"]["type"]),
        head_node_type=str(config["head_node_type"]),
        max_workers=int(config.get("max_workers", 2)),
        idle_timeout_minutes=float(config["idle_timeout_minutes"]),
        node_types=tuple(specs),
        warnings=tuple(warnings),
    )
    return spec, []


def validate_cluster_config(config: Mapping[str, Any], source: str = "cluster.yaml") -> ClusterSpec:
    """``check_cluster_config`` that raises ConfigCheckError listing every problem."""
    spec, problems = check_cluster_config(config, source)
    if problems or spec is None:
        raise ConfigCheckError(problems)
    return spec


# --- serve_config.yaml --------------------------------------------------------------------


def _actor_request(deployment: Mapping[str, Any]) -> dict[str, float]:
    """Resources one replica asks for, as declared in the config (Serve's default: 1 CPU)."""
    options = deployment.get("ray_actor_options") or {}
    request = {"CPU": float(options.get("num_cpus", SERVE_DEFAULT_REPLICA_CPUS))}
    if options.get("num_gpus"):
        request["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        request["memory"] = float(options["memory"])
    request.update({k: float(v) for k, v in (options.get("resources") or {}).items()})
    return {k: v for k, v in request.items() if v > 0}


def _fits(request: Mapping[str, float], offered: Mapping[str, float]) -> bool:
    return all(offered.get(k, 0.0) >= v for k, v in request.items())


def check_serve_config(
    config: Mapping[str, Any],
    source: str = "serve_config.yaml",
    cluster: ClusterSpec | None = None,
    check_imports: bool = True,
) -> tuple[Any, list[str]]:
    """Validate a Serve deploy config; (ServeDeploySchema or None, problems). Never raises.

    Serve's own pydantic schema first; then each application's import_path must be
    importable here, and (given the cluster) each replica must fit on some node type.
    """
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        schema = ServeDeploySchema.model_validate(dict(config))
    except ValidationError as exc:
        return None, [
            f"{source}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']} (Serve schema)"
            for err in exc.errors()
        ]
    problems: list[str] = []
    for app in config.get("applications") or []:
        app_name = app.get("name", "default")
        module_name, _, attribute = str(app["import_path"]).replace(":", ".").rpartition(".")
        if check_imports:
            try:
                found = importlib.util.find_spec(module_name) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                problems.append(
                    f"{source}: application {app_name!r}: import_path {app['import_path']!r}: "
                    f"module {module_name!r} is not importable (is Encore installed on the node?)"
                )
        if cluster is None:
            continue
        for deployment in app.get("deployments") or []:
            request = _actor_request(deployment)
            where = f"{source}: application {app_name!r} deployment {deployment.get('name')!r}"
            if not any(_fits(request, t.resources) for t in cluster.node_types):
                problems.append(
                    f"{where}: a replica needs {request}, which no node type in cluster.yaml "
                    f"offers ({ {t.name: t.resources for t in cluster.node_types} }); the "
                    "autoscaler could never place it"
                )
                continue
            autoscaling = deployment.get("autoscaling_config") or {}
            max_replicas = autoscaling.get("max_replicas", deployment.get("num_replicas"))
            if isinstance(max_replicas, int) and request.get("CPU"):
                wanted = max_replicas * request["CPU"]
                available = cluster.max_total("CPU")
                if wanted > available:
                    problems.append(
                        f"{where}: {max_replicas} replicas x {request['CPU']:g} CPU = {wanted:g} "
                        f"CPUs, more than the cluster's {available:g} at full scale"
                    )
    return schema, problems


# --- everything at once -------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentCheck:
    """What ``validate_deployment`` checked, for printing."""

    cluster: ClusterSpec | None
    applications: list[str] = field(default_factory=list)
    storage: dict[str, str] = field(default_factory=dict)


def validate_deployment(
    cluster_uri: str | None,
    serve_uri: str | None,
    storage_uris: Mapping[str, str] | None = None,
    check_imports: bool = True,
) -> DeploymentCheck:
    """Check cluster.yaml, serve_config.yaml and storage; raise one ConfigCheckError if any fail."""
    problems: list[str] = []
    cluster = None
    if cluster_uri is not None:
        try:
            cluster, found = check_cluster_config(load_yaml(cluster_uri), cluster_uri)
            problems += found
        except ConfigCheckError as exc:
            problems += exc.problems
    uris = dict(storage_uris if storage_uris is not None else default_storage_uris())
    applications: list[str] = []
    if serve_uri is not None:
        try:
            serve_config = load_yaml(serve_uri)
            schema, found = check_serve_config(serve_config, serve_uri, cluster, check_imports)
            problems += found
            if schema is not None:
                applications = [app.name for app in schema.applications]
                uris.update(storage_uris_in_serve_config(serve_config))
        except ConfigCheckError as exc:
            problems += exc.problems
    problems += check_storage(uris)
    if problems:
        raise ConfigCheckError(problems)
    return DeploymentCheck(cluster=cluster, applications=applications, storage=uris)
