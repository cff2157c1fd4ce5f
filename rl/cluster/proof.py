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
``v0001`` trained on the cluster. This module runs the stages in order and reports (the serve
deploy, load and job helpers are rl/cluster/proof_steps.py); the cluster's lifecycle (config, start/stop with the process
marker, token auth, the status ``Observer`` reading the dashboard's REST API) is
rl/cluster/fake.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
from rl.cluster.proof_steps import (
    app_running,
    app_statuses,
    drive_load,
    encore_command,
    job_logs,
    learner_node,
    proof_serve_config,
    run_job,
    submit_job,
    wait_job,
)
from rl.config_checks import require_at_least, require_positive

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
        require_positive(self, "load_seconds")
        require_at_least(
            self, 1, "load_concurrency", "scorer_max_replicas", "sim_users", "sim_days",
            "train_iterations",
        )  # fmt: skip


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


def _stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


@dataclass
class ProofRun:
    """One proof: where its data lives on the "shared storage", its cluster and deadline."""

    config: ProofConfig
    root: str
    report: ProofReport = field(default_factory=ProofReport)

    def __post_init__(self) -> None:
        from rl import paths

        self.data_root = os.path.join(self.root, "data")  # every fake node sees it
        self.registry_uri = os.path.join(self.data_root, "registry")
        self.log_uri = os.path.join(self.data_root, "logs", "sim")
        self.steps_uri = os.path.join(self.data_root, "offline", "steps")
        self.embedding_uri = self.config.embedding_uri or paths.default_embedding_uri()
        self.serve_present = os.path.exists(self.config.serve_config)
        self.deadline = time.monotonic() + self.config.timeout_s

    def left(self) -> float:
        return max(10.0, self.deadline - time.monotonic())

    def validate(self) -> None:
        from rl import paths
        from rl.cluster.config_check import validate_deployment

        _stage("1. validate cluster.yaml, serve_config.yaml and storage before starting anything")
        check = validate_deployment(
            self.config.cluster_yaml,
            self.config.serve_config if self.serve_present else None,
            storage_uris={
                "catalog": paths.default_catalog_uri(),
                "embedding": self.embedding_uri,
                "logs": self.log_uri,
                "registry": self.registry_uri,
            },
        )
        assert check.cluster is not None
        print(
            f"ok: {check.cluster.cluster_name} ({check.cluster.provider_type}), node types "
            f"{[t.name for t in check.cluster.node_types]}, applications {check.applications or '-'}"
        )
        if not self.serve_present:
            self.report.notes.append(f"{self.config.serve_config} not found: serving stage skipped")

    def make_cluster(self) -> FakeCluster:
        from rl.cluster.config_check import load_yaml
        from rl.cluster.fake_config import FakeScale

        return FakeCluster.from_cluster_config(
            load_yaml(self.config.cluster_yaml),
            FakeScale(cpus=self.config.fake_cpus, max_workers=self.config.fake_max_workers),
            self.root,
            node_env={"ENCORE_DATA": self.data_root},
        )

    def start(self, cluster: FakeCluster, observer: Observer) -> None:
        _stage(
            "2. fake multi-node cluster: RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config"
        )
        started = time.monotonic()
        cluster.start()
        node_types = ", ".join(
            f"{n}: CPU {e['resources']['CPU']}, max {e.get('max_workers', 0)}"
            for n, e in cluster.fake_config["available_node_types"].items()
        )
        print(
            f"head up in {time.monotonic() - started:.0f}s; dashboard {cluster.dashboard_url}, "
            f"GCS {cluster.gcs_address}, token auth on; node types {node_types}"
        )
        observer.started_at = time.monotonic()
        observer.start()
        # The log is simulated on the cluster while Serve comes up (the driver needs no CPU).
        submit_job(cluster, "encore-simulate", encore_command(
            "simulate", "--users", str(self.config.sim_users), "--days",
            str(self.config.sim_days), "--out", self.log_uri, "--embedding", self.embedding_uri,
        ))  # fmt: skip

    def serve_and_load(self, cluster: FakeCluster, observer: Observer) -> None:
        from rl.cluster.config_check import load_yaml

        _stage("3. serve deploy serve_config.yaml, then bounded loopback load")
        http_port = free_port()
        serve_config = proof_serve_config(
            load_yaml(self.config.serve_config), http_port, free_port(),
            {"embedding_uri": self.embedding_uri, "registry_uri": self.registry_uri,
             "data_root": self.data_root},
            self.config.scorer_max_replicas,
        )  # fmt: skip
        serve_path = os.path.join(self.root, "serve_config.proof.yaml")
        with open(serve_path, "w") as handle:
            yaml.safe_dump(serve_config, handle, sort_keys=False)
        run_cli(
            [venv_bin("serve"), "deploy", "--address", cluster.dashboard_url, serve_path],
            cluster.client_env(),
            timeout_s=120,
        )
        url = f"http://127.0.0.1:{http_port}"
        if not wait_for(lambda: app_running(cluster), min(self.left(), 420), interval_s=3):
            raise RuntimeError(f"the Serve app did not reach RUNNING: {app_statuses(cluster)}")
        print(f"app RUNNING at {url}", flush=True)
        load = f"{self.config.load_concurrency} clients x {self.config.load_seconds:.0f}s"
        observer.note(f"load on: {load}")
        ok, failed = drive_load(
            url, self._track_ids(), self.config.load_seconds, self.config.load_concurrency
        )
        self.report.requests_ok, self.report.requests_failed = ok, failed
        observer.note(f"load off: {ok} ok, {failed} failed")
        print(f"load: {ok} requests ok, {failed} failed", flush=True)

    def _track_ids(self) -> list[str]:
        import pyarrow.parquet as pq

        table = pq.read_table(
            os.path.join(self.embedding_uri, "latents.parquet"), columns=["track_id"]
        )
        return [str(t) for t in table.column("track_id").to_pylist()[:5000]]

    def train_on_cluster(self, cluster: FakeCluster, observer: Observer) -> list[str]:
        """Wait for the simulation, convert the log and train, all as cluster jobs; returns
        the train command's arguments (node loss resubmits them)."""
        from rl.registry import ModelRegistry

        _stage("4. training on the cluster: ray job submit -- encore train --num-learners 1")
        status = wait_job(cluster, "encore-simulate", min(self.left(), 600))
        self.report.jobs["encore-simulate"] = status
        if status != "SUCCEEDED":
            logs = job_logs(cluster, "encore-simulate")[-3000:]
            raise RuntimeError(f"simulate job {status}:\n{logs}")
        print(f"simulated log at {self.log_uri}", flush=True)
        run_job(cluster, "encore-offline-steps", encore_command(
            "offline-steps", "--log", self.log_uri, "--out", self.steps_uri,
            "--embedding", self.embedding_uri,
        ), min(self.left(), 600), self.report.jobs)  # fmt: skip
        train_args = [
            "train", "--algo", "offline-ppo", "--data", self.steps_uri, "--iterations",
            str(self.config.train_iterations), "--num-learners", "1", "--batch-size", "64",
            "--updates-per-iteration", "2", "--registry", self.registry_uri,
        ]  # fmt: skip
        observer.note("train job submitted")
        logs = run_job(
            cluster, "encore-train", encore_command(*train_args), min(self.left(), 900),
            self.report.jobs,
        )  # fmt: skip
        progress = ("iter", "registered", "training")
        print(
            "\n".join(line for line in logs.splitlines() if line.startswith(progress)), flush=True
        )
        versions = ModelRegistry(self.registry_uri).list_versions()
        self.report.registry_versions = [v.version for v in versions]
        print(f"registry {self.registry_uri}: versions {self.report.registry_versions}", flush=True)
        return train_args

    def wait_for_scale_down(self, cluster: FakeCluster, observer: Observer) -> None:
        _stage("6. idle: the autoscaler removes idle workers")
        observer.note("idle")
        minimum = {
            n: e.get("min_workers", 0)
            for n, e in cluster.fake_config["available_node_types"].items()
            if n != HEAD_NODE_TYPE
        }
        scaled_down = wait_for(
            lambda: all(observer.sample().nodes.get(n, 0) <= m for n, m in minimum.items()),
            min(self.left(), 150),
            interval_s=5,
        )
        self.report.notes.append(
            "scaled down to min_workers" if scaled_down
            else "did not scale down to min_workers within the wait"
        )  # fmt: skip

    def teardown(self, cluster: FakeCluster, observer: Observer, keep_work_dir: bool) -> None:
        _stage("7. teardown")
        observer.stop()
        report = self.report
        report.samples = observer.samples
        report.peak_nodes = {
            n: observer.peak_nodes(n) for n in cluster.fake_config["available_node_types"]
        }
        report.peak_replicas = observer.peak_replicas()
        if cluster.started:
            report.processes_stopped = cluster.stop()
        leftover = processes_with_marker(cluster.marker)
        print(
            f"stopped {report.processes_stopped} processes of this cluster; left: {len(leftover)}",
            flush=True,
        )
        if not keep_work_dir and not leftover:
            remove_work_dir(self.root)


def run_proof(config: ProofConfig, work_dir: str | None = None) -> ProofReport:
    """Validate, start the fake cluster, serve + load, train as jobs, tear down (always)."""
    run = ProofRun(config, work_dir or make_work_dir())
    run.validate()
    cluster = run.make_cluster()
    observer = Observer(cluster)
    try:
        run.start(cluster, observer)
        if run.serve_present:
            run.serve_and_load(cluster, observer)
        train_args = run.train_on_cluster(cluster, observer)
        if config.node_loss and run.report.registry_versions:
            _stage("5. node loss during training, then resume")
            run_node_loss(
                cluster, observer, run.report, train_args, run.report.registry_versions[-1],
                run.registry_uri, run.left,
            )  # fmt: skip
        run.wait_for_scale_down(cluster, observer)
    finally:
        run.teardown(cluster, observer, keep_work_dir=work_dir is not None)
    return run.report


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
    submit_job(cluster, "encore-train-interrupted", encore_command(*resume_args))
    node_id = None
    found = wait_for(lambda: learner_node(cluster) is not None, min(left(), 300), interval_s=2)
    if found:
        node_id = learner_node(cluster)
    if node_id is None or node_id.endswith("00000"):
        report.notes.append("node loss: no learner seen on a worker node; skipped")
        return
    killed = kill_node(cluster, node_id)
    observer.note(f"killed node ...{node_id[-5:]} ({killed} processes)")
    print(f"killed worker node ...{node_id[-5:]} hosting the learner ({killed} processes)")
    status = wait_job(cluster, "encore-train-interrupted", min(left(), 600))
    report.jobs["encore-train-interrupted"] = status
    print(f"interrupted job: {status}", flush=True)
    submit_job(cluster, "encore-train-resumed", encore_command(*resume_args))
    status = wait_job(cluster, "encore-train-resumed", min(left(), 900))
    report.jobs["encore-train-resumed"] = status
    from rl.registry import ModelRegistry

    versions = ModelRegistry(registry_uri).list_versions()
    report.registry_versions = [v.version for v in versions]
    print(
        f"resumed job: {status}; versions {[(v.version, v.parent) for v in versions]}", flush=True
    )


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
