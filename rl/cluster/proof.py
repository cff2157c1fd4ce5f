"""``encore cluster proof``: Encore on a real (fake multi-node) Ray cluster, end to end.

What it does, on one machine, with Ray's own autoscaler and CLIs:

1. checks cluster.yaml + serve_config.yaml + storage (``rl.cluster.config_check.validate_deployment``);
2. derives a ``fake_multinode`` config from cluster.yaml (same node types, CPUs scaled down)
   and starts ``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...`` on its own
   ports and temp dir, with token authentication on (a token of its own);
3. ``serve deploy`` of serve_config.yaml (proxy on loopback, a free port), drives bounded
   HTTP load and records node counts per type and running replicas per deployment;
4. simulates a small feedback log in a shared location and ``ray job submit -- encore
   train ... --num-learners 1``; waits for the job and reads the version from the registry;
5. optionally kills the worker node that runs the learner mid-training and resubmits with
   ``--resume`` (node loss);
6. always tears the cluster down: every process carrying this run's marker is stopped.

Run it: ``encore cluster proof`` (about 5-10 minutes on 2 cores). Expect the node count of
``cpu_worker`` to rise under load and fall after ``idle_timeout`` and a registry version
``v0001`` trained on the cluster. This module holds the stages (serve deploy, load, jobs,
registry check, report); the cluster's lifecycle (config, start/stop with the process
marker, token auth, the status ``Observer`` reading the dashboard's REST API) is
rl/cluster/fake.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from rl.cluster.config_check import HEAD_NODE_TYPE
from rl.cluster.fake import (
    FakeCluster,
    Observer,
    Sample,
    format_sample,
    free_port,
    kill_node,
    make_work_dir,
    processes_with_marker,
    remove_work_dir,
    run_cli,
    venv_bin,
    wait_for,
)

# --- the proof, stage by stage -------------------------------------------------------------


@dataclass(frozen=True)
class ProofConfig:
    """Budget and sizes of ``encore cluster proof``; small enough for a 2-core machine."""

    cluster_yaml: str = "cluster.yaml"
    serve_config: str = "serve_config.yaml"
    """Deployed as given, except proxy host/port (loopback, free ports), HeadOnly proxy,
    shared data locations, and the Scorer's autoscaling bounds (below)."""
    embedding_uri: str = ""
    """An existing song VAE for the app and the log converter ("" = the project's default)."""
    fake_cpus: dict[str, int] = field(
        default_factory=lambda: {HEAD_NODE_TYPE: 0, "cpu_worker": 1, "train_worker": 2}
    )
    """Logical CPUs per fake node: head 0 (as in cluster.yaml), serving 1, training 2."""
    fake_max_workers: dict[str, int] = field(
        default_factory=lambda: {"cpu_worker": 3, "train_worker": 1}
    )
    """Most fake nodes of each worker type the autoscaler may start."""
    load_seconds: float = 60.0
    """How long HTTP load is driven. > 0."""
    load_concurrency: int = 8
    """Concurrent loopback clients. >= 1."""
    scorer_max_replicas: int = 4
    """Scorer replicas Serve may add under load (each 0.5 CPU, so >2 need a new node)."""
    sim_users: int = 200
    """Users of the simulation job whose log the training job learns from. >= 1."""
    sim_days: int = 4
    """Days of that simulation. >= 1."""
    train_iterations: int = 3
    """Iterations of the training job (offline PPO on RLlib). >= 1."""
    node_loss: bool = False
    """Also kill the node running the learner during a second training job and resubmit."""
    timeout_s: float = 1500.0
    """Whole-proof deadline; teardown runs regardless."""

    def __post_init__(self) -> None:
        checks = [
            (self.load_seconds > 0, f"load_seconds must be > 0, got {self.load_seconds}"),
            (
                self.load_concurrency >= 1,
                f"load_concurrency must be >= 1, got {self.load_concurrency}",
            ),
            (
                self.scorer_max_replicas >= 1,
                f"scorer_max_replicas must be >= 1, got {self.scorer_max_replicas}",
            ),
            (self.sim_users >= 1 and self.sim_days >= 1, "sim_users and sim_days must be >= 1"),
            (
                self.train_iterations >= 1,
                f"train_iterations must be >= 1, got {self.train_iterations}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class ProofReport:
    """What the proof observed (printed, and asserted on by the slow test)."""

    samples: list[Sample] = field(default_factory=list)
    peak_nodes: dict[str, int] = field(default_factory=dict)
    peak_replicas: dict[str, int] = field(default_factory=dict)
    requests_ok: int = 0
    requests_failed: int = 0
    jobs: dict[str, str] = field(default_factory=dict)
    """submission id -> final status."""
    registry_versions: list[str] = field(default_factory=list)
    processes_stopped: int = 0
    notes: list[str] = field(default_factory=list)


def proof_serve_config(
    source: dict[str, Any],
    http_port: int,
    grpc_port: int,
    app_args: dict[str, Any],
    scorer_max: int,
) -> dict[str, Any]:
    """serve_config.yaml adapted to one machine: loopback proxy on free ports, one proxy
    (fake nodes share the host's ports), the proof's data locations, a Scorer that scales."""
    config = json.loads(json.dumps(source))
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {
        **config.get("http_options", {}),
        "host": "127.0.0.1",
        "port": http_port,
    }
    if "grpc_options" in config:
        config["grpc_options"] = {**config["grpc_options"], "port": grpc_port}
    for app in config["applications"]:
        app["args"] = {**(app.get("args") or {}), **app_args}
        deployments = {d["name"]: d for d in app.get("deployments") or []}
        scorer = deployments.setdefault("Scorer", {"name": "Scorer"})
        scorer["ray_actor_options"] = {**scorer.get("ray_actor_options", {}), "num_cpus": 0.5}
        scorer["autoscaling_config"] = {
            **scorer.get("autoscaling_config", {}),
            "min_replicas": 1,
            "max_replicas": scorer_max,
            "target_ongoing_requests": 1,
            "upscale_delay_s": 2,
            "downscale_delay_s": 15,
        }
        scorer.pop("num_replicas", None)
        app["deployments"] = list(deployments.values())
    return config


def drive_load(url: str, track_ids: list[str], seconds: float, concurrency: int) -> tuple[int, int]:
    """POST /v1/recommend from ``concurrency`` loopback clients for ``seconds``; (ok, failed)."""
    import random

    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load is loopback only, got {url}")
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            body = json.dumps(
                {"user_id": f"proof-user-{rng.randrange(500)}", "track_id": rng.choice(track_ids)}
            ).encode()
            request = urllib.request.Request(
                url + "/v1/recommend", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    ok = response.status == 200
            except (urllib.error.URLError, OSError):
                ok = False
                time.sleep(0.5)
            with lock:
                counts["ok" if ok else "failed"] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    return counts["ok"], counts["failed"]


def job_status(cluster: FakeCluster, submission_id: str) -> str:
    try:
        return str(cluster.get_json(f"/api/jobs/{submission_id}")["status"])
    except (urllib.error.URLError, OSError, KeyError):
        return "UNKNOWN"


def submit_job(cluster: FakeCluster, submission_id: str, entrypoint: list[str]) -> None:
    """``ray job submit --no-wait`` with the cluster token (the CLI users run)."""
    run_cli(
        [
            venv_bin("ray"),
            "job",
            "submit",
            "--address",
            cluster.dashboard_url,
            "--no-wait",
            "--submission-id",
            submission_id,
            "--",
            *entrypoint,
        ],
        cluster.client_env(),
        timeout_s=120,
    )


def wait_job(cluster: FakeCluster, submission_id: str, timeout_s: float) -> str:
    terminal = {"SUCCEEDED", "FAILED", "STOPPED"}
    wait_for(lambda: job_status(cluster, submission_id) in terminal, timeout_s, interval_s=3.0)
    return job_status(cluster, submission_id)


def job_logs(cluster: FakeCluster, submission_id: str) -> str:
    try:
        return str(cluster.get_json(f"/api/jobs/{submission_id}/logs")["logs"])
    except (urllib.error.URLError, OSError, KeyError):
        return ""


def _encore(*args: str) -> list[str]:
    return [venv_bin("encore"), *args]


def _stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run_proof(config: ProofConfig, work_dir: str | None = None) -> ProofReport:
    """Validate, start the fake cluster, serve + load, train as jobs, tear down (always)."""
    from rl import paths
    from rl.cluster.config_check import FakeScale, load_yaml, validate_deployment
    from rl.registry import ModelRegistry

    report = ProofReport()
    root = work_dir or make_work_dir()
    data_root = os.path.join(root, "data")  # the "shared storage" every fake node sees
    registry_uri = os.path.join(data_root, "registry")
    log_uri = os.path.join(data_root, "logs", "sim")
    steps_uri = os.path.join(data_root, "offline", "steps")
    embedding_uri = config.embedding_uri or paths.default_embedding_uri()
    serve_present = os.path.exists(config.serve_config)

    _stage("1. validate cluster.yaml, serve_config.yaml and storage before starting anything")
    check = validate_deployment(
        config.cluster_yaml,
        config.serve_config if serve_present else None,
        storage_uris={
            "catalog": paths.default_catalog_uri(),
            "embedding": embedding_uri,
            "logs": log_uri,
            "registry": registry_uri,
        },
    )
    assert check.cluster is not None
    print(
        f"ok: {check.cluster.cluster_name} ({check.cluster.provider_type}), node types "
        f"{[t.name for t in check.cluster.node_types]}, applications {check.applications or '-'}"
    )
    if not serve_present:
        report.notes.append(f"{config.serve_config} not found: serving stage skipped")

    cluster = FakeCluster.from_cluster_config(
        load_yaml(config.cluster_yaml),
        FakeScale(cpus=config.fake_cpus, max_workers=config.fake_max_workers),
        root,
        node_env={"ENCORE_DATA": data_root},
    )
    fake = cluster.fake_config
    observer = Observer(cluster)
    deadline = time.monotonic() + config.timeout_s

    def left() -> float:
        return max(10.0, deadline - time.monotonic())

    try:
        _stage(
            "2. fake multi-node cluster: RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config"
        )
        started = time.monotonic()
        cluster.start()
        print(
            f"head up in {time.monotonic() - started:.0f}s; dashboard {cluster.dashboard_url}, "
            f"GCS {cluster.gcs_address}, token auth on; node types "
            + ", ".join(
                f"{n}: CPU {e['resources']['CPU']}, max {e.get('max_workers', 0)}"
                for n, e in fake["available_node_types"].items()
            )
        )
        observer.started_at = time.monotonic()
        observer.start()

        # The log is simulated on the cluster while Serve comes up (the driver needs no CPU).
        submit_job(
            cluster,
            "encore-simulate",
            _encore(
                "simulate",
                "--users",
                str(config.sim_users),
                "--days",
                str(config.sim_days),
                "--out",
                log_uri,
                "--embedding",
                embedding_uri,
            ),
        )

        if serve_present:
            _stage("3. serve deploy serve_config.yaml, then bounded loopback load")
            http_port = free_port()
            serve_config = proof_serve_config(
                load_yaml(config.serve_config),
                http_port,
                free_port(),
                {
                    "embedding_uri": embedding_uri,
                    "registry_uri": registry_uri,
                    "data_root": data_root,
                },
                config.scorer_max_replicas,
            )
            serve_path = os.path.join(root, "serve_config.proof.yaml")
            with open(serve_path, "w") as handle:
                yaml.safe_dump(serve_config, handle, sort_keys=False)
            run_cli(
                [venv_bin("serve"), "deploy", "--address", cluster.dashboard_url, serve_path],
                cluster.client_env(),
                timeout_s=120,
            )
            url = f"http://127.0.0.1:{http_port}"
            ready = wait_for(lambda: _app_running(cluster), min(left(), 420), interval_s=3)
            if not ready:
                raise RuntimeError(f"the Serve app did not reach RUNNING: {_app_statuses(cluster)}")
            print(f"app RUNNING at {url}", flush=True)
            import pyarrow.parquet as pq

            track_ids = [
                str(t)
                for t in pq.read_table(
                    os.path.join(embedding_uri, "latents.parquet"), columns=["track_id"]
                )
                .column("track_id")
                .to_pylist()[:5000]
            ]
            observer.note(
                f"load on: {config.load_concurrency} clients x {config.load_seconds:.0f}s"
            )
            ok, failed = drive_load(url, track_ids, config.load_seconds, config.load_concurrency)
            report.requests_ok, report.requests_failed = ok, failed
            observer.note(f"load off: {ok} ok, {failed} failed")
            print(f"load: {ok} requests ok, {failed} failed", flush=True)

        _stage("4. training on the cluster: ray job submit -- encore train --num-learners 1")
        status = wait_job(cluster, "encore-simulate", min(left(), 600))
        report.jobs["encore-simulate"] = status
        if status != "SUCCEEDED":
            raise RuntimeError(
                f"simulate job {status}:\n{job_logs(cluster, 'encore-simulate')[-3000:]}"
            )
        print(f"simulated log at {log_uri}", flush=True)
        submit_job(
            cluster,
            "encore-offline-steps",
            [
                venv_bin("encore"),
                "offline-steps",
                "--log",
                log_uri,
                "--out",
                steps_uri,
                "--embedding",
                embedding_uri,
            ],
        )
        status = wait_job(cluster, "encore-offline-steps", min(left(), 600))
        report.jobs["encore-offline-steps"] = status
        if status != "SUCCEEDED":
            raise RuntimeError(
                f"offline-steps job {status}:\n{job_logs(cluster, 'encore-offline-steps')[-3000:]}"
            )
        train_args = [
            "train",
            "--algo",
            "offline-ppo",
            "--data",
            steps_uri,
            "--iterations",
            str(config.train_iterations),
            "--num-learners",
            "1",
            "--batch-size",
            "64",
            "--updates-per-iteration",
            "2",
            "--registry",
            registry_uri,
        ]
        observer.note("train job submitted")
        submit_job(cluster, "encore-train", _encore(*train_args))
        status = wait_job(cluster, "encore-train", min(left(), 900))
        report.jobs["encore-train"] = status
        logs = job_logs(cluster, "encore-train")
        print(
            "\n".join(
                line
                for line in logs.splitlines()
                if line.startswith(("iter", "registered", "training"))
            ),
            flush=True,
        )
        if status != "SUCCEEDED":
            raise RuntimeError(f"train job {status}:\n{logs[-3000:]}")
        report.registry_versions = [v.version for v in ModelRegistry(registry_uri).list_versions()]
        print(f"registry {registry_uri}: versions {report.registry_versions}", flush=True)

        if config.node_loss and report.registry_versions:
            _stage("5. node loss during training, then resume")
            run_node_loss(
                cluster,
                observer,
                report,
                train_args,
                report.registry_versions[-1],
                registry_uri,
                left,
            )

        _stage("6. idle: the autoscaler removes idle workers")
        observer.note("idle")
        minimum = {
            n: e.get("min_workers", 0)
            for n, e in fake["available_node_types"].items()
            if n != HEAD_NODE_TYPE
        }
        scaled_down = wait_for(
            lambda: all(observer.sample().nodes.get(n, 0) <= m for n, m in minimum.items()),
            min(left(), 150),
            interval_s=5,
        )
        report.notes.append(
            "scaled down to min_workers"
            if scaled_down
            else "did not scale down to min_workers within the wait"
        )
    finally:
        _stage("7. teardown")
        observer.stop()
        report.samples = observer.samples
        report.peak_nodes = {n: observer.peak_nodes(n) for n in fake["available_node_types"]}
        report.peak_replicas = observer.peak_replicas()
        if cluster.started:
            report.processes_stopped = cluster.stop()
        leftover = processes_with_marker(cluster.marker)
        print(
            f"stopped {report.processes_stopped} processes of this cluster; left: {len(leftover)}",
            flush=True,
        )
        if work_dir is None and not leftover:
            remove_work_dir(root)
    return report


def _app_statuses(cluster: FakeCluster) -> dict[str, str]:
    try:
        details = cluster.get_json("/api/serve/applications/")
    except (urllib.error.URLError, OSError):
        return {}
    return {
        name: str(app.get("status")) for name, app in (details.get("applications") or {}).items()
    }


def _app_running(cluster: FakeCluster) -> bool:
    statuses = _app_statuses(cluster)
    if any(s == "DEPLOY_FAILED" for s in statuses.values()):
        raise RuntimeError(f"serve deploy failed: {cluster.get_json('/api/serve/applications/')}")
    return bool(statuses) and all(s == "RUNNING" for s in statuses.values())


def run_node_loss(
    cluster: FakeCluster,
    observer: Observer,
    report: ProofReport,
    train_args: list[str],
    parent: str,
    registry_uri: str,
    left: Callable[[], float],
) -> None:
    """Kill the node hosting the learner mid-job; resubmit resuming from ``parent``."""
    resume_args = [*train_args, "--resume", parent]
    submit_job(cluster, "encore-train-interrupted", _encore(*resume_args))
    node_id = None
    found = wait_for(lambda: _learner_node(cluster) is not None, min(left(), 300), interval_s=2)
    if found:
        node_id = _learner_node(cluster)
    if node_id is None or node_id.endswith("00000"):
        report.notes.append("node loss: no learner seen on a worker node; skipped")
        return
    killed = kill_node(cluster, node_id)
    observer.note(f"killed node ...{node_id[-5:]} ({killed} processes)")
    print(f"killed worker node ...{node_id[-5:]} hosting the learner ({killed} processes)")
    status = wait_job(cluster, "encore-train-interrupted", min(left(), 600))
    report.jobs["encore-train-interrupted"] = status
    print(f"interrupted job: {status}", flush=True)
    submit_job(cluster, "encore-train-resumed", _encore(*resume_args))
    status = wait_job(cluster, "encore-train-resumed", min(left(), 900))
    report.jobs["encore-train-resumed"] = status
    from rl.registry import ModelRegistry

    versions = ModelRegistry(registry_uri).list_versions()
    report.registry_versions = [v.version for v in versions]
    print(
        f"resumed job: {status}; versions {[(v.version, v.parent) for v in versions]}", flush=True
    )


def _learner_node(cluster: FakeCluster) -> str | None:
    try:
        reply = cluster.get_json("/api/v0/actors?limit=1000&detail=1")
    except (urllib.error.URLError, OSError):
        return None
    for actor in reply["data"]["result"]["result"]:
        if "Learner" in str(actor.get("class_name")) and actor.get("state") == "ALIVE":
            return str(actor.get("node_id"))
    return None


def print_report(report: ProofReport) -> None:
    _stage("what the proof observed")
    print("node counts over time (alive nodes per type) and RUNNING replicas:")
    last = None
    for sample in report.samples:
        key = (sample.nodes, sample.replicas)
        if key != last or sample.note:
            print("  " + format_sample(sample))
        last = key
    print(f"peak nodes per type: {report.peak_nodes}")
    print(f"peak replicas: {report.peak_replicas}")
    print(f"requests: {report.requests_ok} ok, {report.requests_failed} failed")
    print(f"jobs: {report.jobs}")
    print(f"registry versions: {report.registry_versions}")
    for note in report.notes:
        print(f"note: {note}")
