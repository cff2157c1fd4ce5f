"""The steps ``encore cluster proof`` drives on a running fake cluster: the Serve app and
its loopback load, and jobs submitted with ``ray job submit`` (rl/cluster/proof.py runs
them in order; rl/cluster/fake.py starts, observes and stops the cluster).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from rl.cluster.fake import FakeCluster, run_cli, venv_bin, wait_for

# --- serving --------------------------------------------------------------------------------


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


def app_statuses(cluster: FakeCluster) -> dict[str, str]:
    try:
        details = cluster.get_json("/api/serve/applications/")
    except (urllib.error.URLError, OSError):
        return {}
    return {
        name: str(app.get("status")) for name, app in (details.get("applications") or {}).items()
    }


def app_running(cluster: FakeCluster) -> bool:
    statuses = app_statuses(cluster)
    if any(s == "DEPLOY_FAILED" for s in statuses.values()):
        raise RuntimeError(f"serve deploy failed: {cluster.get_json('/api/serve/applications/')}")
    return bool(statuses) and all(s == "RUNNING" for s in statuses.values())


# --- jobs -----------------------------------------------------------------------------------


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


def encore_command(*args: str) -> list[str]:
    return [venv_bin("encore"), *args]


def run_job(
    cluster: FakeCluster,
    submission_id: str,
    entrypoint: list[str],
    timeout_s: float,
    statuses: dict[str, str],
) -> str:
    """Submit and wait; the final status goes into ``statuses``; fails with the job's log
    tail unless it succeeded; returns its logs."""
    submit_job(cluster, submission_id, entrypoint)
    status = wait_job(cluster, submission_id, timeout_s)
    statuses[submission_id] = status
    logs = job_logs(cluster, submission_id)
    if status != "SUCCEEDED":
        raise RuntimeError(f"{submission_id} job {status}:\n{logs[-3000:]}")
    return logs


def learner_node(cluster: FakeCluster) -> str | None:
    try:
        reply = cluster.get_json("/api/v0/actors?limit=1000&detail=1")
    except (urllib.error.URLError, OSError):
        return None
    for actor in reply["data"]["result"]["result"]:
        if "Learner" in str(actor.get("class_name")) and actor.get("state") == "ALIVE":
            return str(actor.get("node_id"))
    return None
