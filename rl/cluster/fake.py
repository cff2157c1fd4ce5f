"""A local fake multi-node Ray cluster: start, observe, stop (the lifecycle under the proof).

Where it sits: ``encore cluster proof`` (rl/cluster/proof.py) runs its stages against a
``FakeCluster``; this module owns everything about the cluster itself:

- config: ``FakeCluster.from_cluster_config`` turns cluster.yaml into a ``fake_multinode``
  autoscaler config (``rl.cluster.config_check.fake_cluster_config``: same node types, CPUs scaled down)
  on a free GCS port;
- start/stop: ``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...`` on its own
  ports and temp dir, every process tagged with a marker in its environment (``MARKER_ENV``),
  so ``stop`` (and ``kill_node``, a lost machine) signal exactly this cluster's processes;
- token auth: the cluster runs with ``RAY_AUTH_MODE=token`` and a token of its own;
  ``client_env`` / ``auth_headers`` give CLI clients and REST reads that token;
- status: ``Observer`` polls the dashboard's REST API in a background thread for alive
  nodes per type and RUNNING Serve replicas, so this process never joins the cluster as
  a driver; ``wait_for`` is the polling helper the stages share.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from rl.cluster.config_check import HEAD_NODE_TYPE
from rl.cluster.fake_config import FakeScale, fake_cluster_config

MARKER_ENV = "ENCORE_PROOF_CLUSTER"
"""Set on ``ray start`` only; every process of the fake cluster (raylets, workers, Serve
replicas, job drivers) inherits it, which is how teardown finds exactly its own processes."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def venv_bin(name: str) -> str:
    """A console script of this environment (ray, serve, encore), wherever PATH points."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else name


def processes_with_marker(marker: str) -> list[int]:
    """PIDs (of this user) whose environment carries ``MARKER_ENV=marker``."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # exited, or another user's process
            continue
    return found


def _signature(resources: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    """CPU, GPU and custom resources of a node (not memory, object store or node:IP)."""
    return tuple(
        sorted(
            (name, float(amount))
            for name, amount in resources.items()
            if name not in ("memory", "object_store_memory") and not name.startswith("node:")
        )
    )


class FakeCluster:
    """A fake multi-node Ray cluster started by ``ray start --head`` with the autoscaler.

    Own GCS/dashboard/client ports and temp dir, so other Ray instances on the machine are
    untouched; ``stop`` signals only the processes carrying this cluster's marker.
    """

    def __init__(
        self,
        fake_config: dict[str, Any],
        root: str,
        head_cpus: int = 0,
        node_env: dict[str, str] | None = None,
    ) -> None:
        self.fake_config = fake_config
        self.node_env = dict(node_env or {})
        """Environment every node process gets (like ENCORE_DATA in cluster.yaml's setup)."""
        self.root = root
        self.head_cpus = head_cpus
        self.marker = secrets.token_hex(8)
        self.gcs_port = int(fake_config["provider"]["gcs_address"].rsplit(":", 1)[1])
        self.dashboard_port = free_port()
        self.token_path = os.path.join(root, "auth_token")
        self.config_path = os.path.join(root, "fake_cluster.yaml")
        self.temp_dir = os.path.join(root, "ray")
        self.started = False
        # Fake nodes carry no node-type label: the autoscaler's types are told apart by the
        # resources they offer (CPU count + custom resources), unique per type by design.
        self._type_by_signature = {
            _signature(entry.get("resources", {})): name
            for name, entry in fake_config["available_node_types"].items()
            if name != HEAD_NODE_TYPE
        }

    @classmethod
    def from_cluster_config(
        cls,
        cluster_config: dict[str, Any],
        scale: FakeScale,
        root: str,
        head_cpus: int = 0,
        node_env: dict[str, str] | None = None,
    ) -> FakeCluster:
        """cluster.yaml's node types scaled down by ``scale``, on a free GCS port."""
        fake = fake_cluster_config(cluster_config, scale, gcs_address=f"127.0.0.1:{free_port()}")
        return cls(fake, root, head_cpus=head_cpus, node_env=node_env)

    # --- addresses and environments -------------------------------------------------------
    @property
    def gcs_address(self) -> str:
        return str(self.fake_config["provider"]["gcs_address"])

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def client_env(self) -> dict[str, str]:
        """Environment for CLI clients (ray job, serve deploy): token auth, this cluster."""
        env = dict(os.environ)
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=self.token_path,
            RAY_ADDRESS=self.dashboard_url,
            RAY_USAGE_STATS_ENABLED="0",
        )
        env.pop("RAY_AUTH_TOKEN", None)
        # As cluster.yaml's setup does on real nodes: this venv's ray/serve/encore/python
        # come first on PATH, for the CLIs here and for job entrypoints on the head.
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        return env

    def auth_headers(self) -> dict[str, str]:
        with open(self.token_path) as handle:
            return {"Authorization": f"Bearer {handle.read().strip()}"}

    # --- life cycle -----------------------------------------------------------------------
    def start(self, timeout_s: float = 180.0) -> None:
        os.makedirs(self.root, exist_ok=True)
        with open(self.config_path, "w") as handle:
            yaml.safe_dump(self.fake_config, handle, sort_keys=False)
        with open(self.token_path, "w") as handle:
            handle.write(secrets.token_hex(32))
        os.chmod(self.token_path, 0o600)
        env = self.client_env()
        env.pop("RAY_ADDRESS")
        env.update(
            {
                MARKER_ENV: self.marker,
                "RAY_FAKE_CLUSTER": "1",
                # The autoscaler reconciles every second instead of every 5 s.
                "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                "OMP_NUM_THREADS": "1",
                **self.node_env,
            }
        )
        command = [
            venv_bin("ray"),
            "start",
            "--head",
            f"--port={self.gcs_port}",
            f"--autoscaling-config={self.config_path}",
            f"--num-cpus={self.head_cpus}",
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-port={self.dashboard_port}",
            "--dashboard-host=127.0.0.1",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--object-store-memory=150000000",
            "--disable-usage-stats",
        ]
        self.started = True  # from here on, stop() must run
        result = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            start_new_session=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"ray start --head failed:\n{result.stdout}\n{result.stderr}")
        self.wait_for_dashboard(timeout_s)

    def wait_for_dashboard(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.get_json("/api/version")
                return
            except (urllib.error.URLError, OSError):
                time.sleep(1.0)
        raise TimeoutError(f"dashboard at {self.dashboard_url} did not answer in {timeout_s:.0f}s")

    def stop(self, grace_s: float = 10.0) -> int:
        """Stop every process of this cluster (SIGTERM, then SIGKILL); returns how many."""
        pids = processes_with_marker(self.marker)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and processes_with_marker(self.marker):
            time.sleep(0.5)
        for pid in processes_with_marker(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # SIGKILL is asynchronous: wait until the kernel has removed them.
        wait_for(lambda: not processes_with_marker(self.marker), 10.0, interval_s=0.5)
        self.started = False
        return len(pids)

    def __enter__(self) -> FakeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.stop()

    # --- REST reads (the dashboard, with the token) ---------------------------------------
    def get_json(self, route: str, timeout_s: float = 10.0) -> Any:
        request = urllib.request.Request(self.dashboard_url + route, headers=self.auth_headers())
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read().decode("utf-8"))

    def alive_nodes_by_type(self) -> dict[str, int]:
        """Alive nodes per node type (the type the autoscaler launched them as)."""
        reply = self.get_json("/api/v0/nodes?limit=1000&detail=1")
        counts: dict[str, int] = {}
        for node in reply["data"]["result"]["result"]:
            if node.get("state") != "ALIVE":
                continue
            if node.get("is_head_node"):
                node_type = HEAD_NODE_TYPE
            else:
                signature = _signature(node.get("resources_total") or {})
                node_type = self._type_by_signature.get(signature, "unknown")
            counts[node_type] = counts.get(node_type, 0) + 1
        return dict(sorted(counts.items()))

    def running_replicas(self) -> dict[str, int]:
        """RUNNING replicas per ``app/deployment`` (empty before Serve starts)."""
        try:
            details = self.get_json("/api/serve/applications/")
        except (urllib.error.URLError, OSError):
            return {}
        counts = {}
        for app_name, app in (details.get("applications") or {}).items():
            for name, deployment in (app.get("deployments") or {}).items():
                running = [r for r in deployment.get("replicas", []) if r.get("state") == "RUNNING"]
                counts[f"{app_name}/{name}"] = len(running)
        return counts


@dataclass
class Sample:
    """One observation of the cluster."""

    seconds: float
    nodes: dict[str, int]
    replicas: dict[str, int]
    note: str = ""


@dataclass
class Observer:
    """Samples node counts and replica counts every ``interval_s`` in a background thread."""

    cluster: FakeCluster
    interval_s: float = 3.0
    samples: list[Sample] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    echo: Callable[[str], None] | None = print

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._note = ""
        self._thread = threading.Thread(target=self._run, name="cluster-observer", daemon=True)

    def start(self) -> Observer:
        self._thread.start()
        return self

    def note(self, text: str) -> None:
        """Attach a phase label to the next sample (e.g. 'load on')."""
        self._note = text

    def sample(self) -> Sample:
        try:
            nodes = self.cluster.alive_nodes_by_type()
        except (urllib.error.URLError, OSError, KeyError):
            nodes = {}
        sample = Sample(
            seconds=time.monotonic() - self.started_at,
            nodes=nodes,
            replicas=self.cluster.running_replicas(),
            note=self._note,
        )
        self._note = ""
        changed = not self.samples or (
            (sample.nodes, sample.replicas) != (self.samples[-1].nodes, self.samples[-1].replicas)
        )
        self.samples.append(sample)
        if self.echo and (changed or sample.note):
            self.echo(format_sample(sample))
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # never started when the cluster failed to come up
            self._thread.join(timeout=30)

    def peak_nodes(self, node_type: str) -> int:
        return max((s.nodes.get(node_type, 0) for s in self.samples), default=0)

    def peak_replicas(self) -> dict[str, int]:
        peaks: dict[str, int] = {}
        for s in self.samples:
            for name, count in s.replicas.items():
                peaks[name] = max(peaks.get(name, 0), count)
        return peaks


def format_sample(sample: Sample) -> str:
    nodes = " ".join(f"{k}={v}" for k, v in sample.nodes.items()) or "-"
    replicas = " ".join(f"{k.split('/')[-1]}={v}" for k, v in sample.replicas.items()) or "-"
    note = f"  <- {sample.note}" if sample.note else ""
    return f"[{sample.seconds:6.1f}s] nodes: {nodes} | replicas: {replicas}{note}"


def run_cli(
    command: list[str], env: dict[str, str], timeout_s: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-3000:]}"
        )
    return result


def make_work_dir(parent: str | None = None) -> str:
    # Short: Ray's unix sockets live under it and socket paths are limited to 107 bytes.
    return tempfile.mkdtemp(prefix="encore-fc-", dir=parent or "/tmp")


def remove_work_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 2.0) -> bool:
    """Poll ``predicate`` every ``interval_s`` until it holds or ``timeout_s`` passes.

    Returns its last value (True as soon as it held)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def kill_node(cluster: FakeCluster, node_id: str) -> int:
    """SIGKILL a fake node's raylet and every process started for it (a lost machine)."""
    killed = 0
    for pid in processes_with_marker(cluster.marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"node_id={node_id}" in cmdline or f"node-id={node_id}" in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed
