"""Two Ingress replicas on two nodes of a fake multi-node cluster, one Redis: both answer.

What it does, on one machine, with Ray's own fake multi-node provider:

1. starts a redis-server on a free loopback port (services/redis_server.py): the user store
   every Ingress replica shares;
2. starts ``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...`` derived from
   cluster.yaml (rl/cluster/fake.py; token auth on) with two ``cpu_worker`` nodes kept up
   and Serve's direct ingress on (every Ingress replica listens on its own HTTP port);
3. ``serve deploy``s serve_config.yaml with the Ingress at exactly two replicas and
   ``max_replicas_per_node: 1``, so Serve must place them on the two different nodes;
4. for each listener, asks one replica for a recommendation and sends its feedback to the
   other (alternating directions), checks the second delivery is refused (404), that both
   replicas show the same state (``GET /v1/users/{id}``: listens counted), and that the
   decision log holds every acknowledged decision exactly once;
5. always stops the cluster (only its own processes) and the redis-server.

Run it: ``python -m rl.cluster.two_node_ingress`` (about 3-5 minutes on 2 busy cores; prints
each step and a summary line). The slow test tests/rl/cluster/test_two_node_ingress.py runs
it and asserts on the report.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import yaml

from rl.cluster.config_check import HEAD_NODE_TYPE, load_yaml
from rl.cluster.fake import (
    FakeCluster,
    free_port,
    make_work_dir,
    remove_work_dir,
    run_cli,
    venv_bin,
    wait_for,
)
from rl.cluster.fake_config import FakeScale

SERVING_NODE_TYPE = "cpu_worker"


@dataclass(frozen=True)
class TwoNodeIngressConfig:
    cluster_yaml: str = "cluster.yaml"
    serve_config: str = "serve_config.yaml"
    embedding_uri: str = ""
    """An existing song VAE ("" = the project's default, trained first if absent)."""
    users: int = 6
    """Listeners; each gets ``rounds`` recommendations answered on one node and their
    feedback on the other. >= 1."""
    rounds: int = 3
    """Recommendation + feedback pairs per listener. >= 1."""
    timeout_s: float = 900.0
    """Deadline for the cluster and the app to come up; teardown runs regardless."""

    def __post_init__(self) -> None:
        if self.users < 1 or self.rounds < 1:
            raise ValueError(f"users and rounds must be >= 1, got {self.users}, {self.rounds}")


@dataclass
class TwoNodeIngressReport:
    replicas: dict[str, str] = field(default_factory=dict)
    """Ingress replica -> the node it runs on."""
    urls: dict[str, str] = field(default_factory=dict)
    """Ingress replica -> its own (direct ingress) HTTP address."""
    answered: dict[str, int] = field(default_factory=dict)
    """Replica -> recommendations it answered."""
    feedback_accepted: dict[str, int] = field(default_factory=dict)
    """Replica -> feedback it accepted for decisions the other replica made."""
    duplicates_refused: int = 0
    users_consistent: int = 0
    """Listeners whose state both replicas show identically, with every listen counted."""
    log_rows: int = 0
    log_duplicates: int = 0
    log_missing: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    processes_stopped: int = 0

    @property
    def on_two_nodes(self) -> bool:
        return len(self.replicas) == 2 and len(set(self.replicas.values())) == 2

    def summary(self) -> str:
        return (
            f"Ingress replicas on {len(set(self.replicas.values()))} nodes, one Redis: "
            f"recommendations answered {self.answered}, feedback accepted across nodes "
            f"{self.feedback_accepted}, second deliveries refused {self.duplicates_refused}, "
            f"listeners consistent on both {self.users_consistent}, log rows {self.log_rows} "
            f"({self.log_missing} missing, {self.log_duplicates} duplicated)"
        )


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return dict(json.loads(response.read()))


def ingress_targets(cluster: FakeCluster) -> dict[str, tuple[str, str]]:
    """Ingress replica name -> (node id, direct HTTP URL), from the dashboard's Serve API."""
    details = cluster.get_json("/api/serve/applications/")
    found = {}
    for group in details.get("target_groups") or []:
        if str(group.get("protocol")).upper() != "HTTP":
            continue
        for target in group["targets"]:
            if "Ingress" in target["name"]:
                url = f"http://127.0.0.1:{target['port']}"
                found[target["name"].rsplit("#", 1)[-1]] = (target["instance_id"], url)
    return found


def deploy_config(
    source: dict[str, Any], data_root: str, embedding_uri: str, redis_url: str
) -> dict[str, Any]:
    """serve_config.yaml with loopback proxies on free ports, this run's data and Redis,
    and exactly two Ingress replicas, at most one per node."""
    from rl.cluster.proof_steps import proof_serve_config

    args = {"data_root": data_root, "embedding_uri": embedding_uri, "user_store": redis_url,
            "ingress_min_replicas": 2, "ingress_max_replicas": 2}  # fmt: skip
    config = proof_serve_config(source, free_port(), free_port(), args, scorer_max=1)
    for app in config["applications"]:
        for deployment in app["deployments"]:
            if deployment["name"] == "Ingress":
                deployment.pop("autoscaling_config", None)
                deployment["num_replicas"] = 2
                deployment["max_replicas_per_node"] = 1
    return config


def exchange(report: TwoNodeIngressReport, config: TwoNodeIngressConfig, track_ids: list[str]):
    """Recommendations on one replica, their feedback on the other; returns the decisions."""
    (first, a), (second, b) = sorted(report.urls.items())
    sent: dict[str, dict[str, Any]] = {}
    for step in range(config.users * config.rounds):
        user = f"two-node-{step % config.users}"
        (here_name, here), (there_name, there) = (
            ((first, a), (second, b)) if step % 2 == 0 else ((second, b), (first, a))
        )
        status, decision = _post(
            f"{here}/v1/recommend", {"user_id": user, "track_id": track_ids[step]}
        )
        if status != 200:
            raise RuntimeError(f"recommend on {here_name} answered {status}")
        report.answered[here_name] = report.answered.get(here_name, 0) + 1
        feedback = {"request_id": decision["request_id"],
                    "track_id": decision["chosen_track_id"], "listen_fraction": 1.0,
                    "skip_level": 3}  # fmt: skip
        status, ack = _post(f"{there}/v1/feedback", feedback)
        if status != 200 or not ack.get("listened"):
            raise RuntimeError(f"feedback on {there_name} answered {status} {ack}")
        report.feedback_accepted[there_name] = report.feedback_accepted.get(there_name, 0) + 1
        if _post(f"{here}/v1/feedback", feedback)[0] == 404:
            report.duplicates_refused += 1
        sent[decision["request_id"]] = decision
    for user in {d["user_id"] for d in sent.values()}:
        views = [_get(f"{url}/v1/users/{user}") for url in (a, b)]
        if views[0] == views[1] and views[0]["listens"] == config.rounds:
            report.users_consistent += 1
    return sent


def check_log(report: TwoNodeIngressReport, log_uri: str, sent: dict[str, Any]) -> None:
    """Every acknowledged decision in the parquet log exactly once (each replica flushes
    its own journal within ``flush_interval_s``)."""
    from rl.feedback.log import read_decisions_table

    def ids() -> list[str]:
        try:
            return [i for i in read_decisions_table(log_uri)["request_id"].to_pylist() if i in sent]
        except (FileNotFoundError, OSError, ValueError):
            return []

    wait_for(lambda: len(set(ids())) >= len(sent), 60, interval_s=1.0)
    logged = ids()
    report.log_rows = len(logged)
    report.log_duplicates = len(logged) - len(set(logged))
    report.log_missing = len(set(sent) - set(logged))


def run(config: TwoNodeIngressConfig, echo=print) -> TwoNodeIngressReport:
    from rl import paths
    from rl.cluster.proof_steps import app_running
    from rl.songs.embedding import ensure_song_embedding
    from services.app import SERVE_FAST_PATH_ENV
    from services.redis_server import start_redis_server

    report = TwoNodeIngressReport()
    started = time.monotonic()
    root = make_work_dir()
    data_root = os.path.join(root, "data")  # every fake node sees it: one machine
    embedding_uri = os.path.abspath(config.embedding_uri or paths.default_embedding_uri())
    track_ids = [str(t) for t in ensure_song_embedding(embedding_uri).track_ids[:500]]
    redis = start_redis_server(os.path.join(root, "redis"))
    echo(f"redis-server at {redis.url}")
    scale = FakeScale(
        cpus={HEAD_NODE_TYPE: 0, SERVING_NODE_TYPE: 1, "train_worker": 2},
        max_workers={SERVING_NODE_TYPE: 2, "train_worker": 0},
        min_workers={SERVING_NODE_TYPE: 2},
    )
    cluster = FakeCluster.from_cluster_config(
        load_yaml(config.cluster_yaml), scale, root,
        node_env={"ENCORE_DATA": data_root, **SERVE_FAST_PATH_ENV},
    )  # fmt: skip
    try:
        cluster.start()
        nodes_up = wait_for(
            lambda: cluster.alive_nodes_by_type().get(SERVING_NODE_TYPE, 0) >= 2,
            config.timeout_s,
        )
        if not nodes_up:
            raise RuntimeError(f"two serving nodes never came up: {cluster.alive_nodes_by_type()}")
        report.seconds["cluster_up"] = time.monotonic() - started
        echo(f"fake cluster up: {cluster.alive_nodes_by_type()} (token auth on)")
        deploy = deploy_config(load_yaml(config.serve_config), data_root, embedding_uri, redis.url)
        deploy_path = os.path.join(root, "serve_two_ingress.yaml")
        with open(deploy_path, "w") as handle:
            yaml.safe_dump(deploy, handle, sort_keys=False)
        run_cli([venv_bin("serve"), "deploy", "--address", cluster.dashboard_url, deploy_path],
                cluster.client_env(), timeout_s=120)  # fmt: skip
        if not wait_for(lambda: app_running(cluster), config.timeout_s, interval_s=3.0):
            raise RuntimeError("the app never reached RUNNING")
        wait_for(lambda: len(ingress_targets(cluster)) == 2, 120, interval_s=1.0)
        report.seconds["app_up"] = time.monotonic() - started
        for replica, (node, url) in ingress_targets(cluster).items():
            report.replicas[replica], report.urls[replica] = node, url
        echo(f"Ingress replicas: {report.replicas} at {report.urls}")
        if not report.on_two_nodes:
            raise RuntimeError(f"the Ingress replicas are not on two nodes: {report.replicas}")
        sent = exchange(report, config, track_ids)
        check_log(report, os.path.join(data_root, "logs", "service"), sent)
        report.seconds["done"] = time.monotonic() - started
        echo(report.summary())
    finally:
        if cluster.started:
            report.processes_stopped = cluster.stop()
        redis.stop()
        remove_work_dir(root)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--embedding", default="", help="song VAE URI (default: data/embedding)")
    args = parser.parse_args(argv)
    report = run(
        TwoNodeIngressConfig(users=args.users, rounds=args.rounds, embedding_uri=args.embedding)
    )
    ok = report.on_two_nodes and report.log_missing == 0 and report.log_duplicates == 0
    print(f"{'ok' if ok else 'FAILED'}: {report.seconds}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
