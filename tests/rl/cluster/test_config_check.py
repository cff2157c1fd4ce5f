"""Cluster configs are refused before anything starts; the fake-cluster proof runs end to end.

Fast tests check rl/cluster/config_check.py on the real cluster.yaml and on broken copies of it; the
slow test runs ``encore cluster proof`` (a fake multi-node Ray cluster with the autoscaler).
"""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from rl.cluster import config_check as cluster
from rl.cluster import fake_config, storage_check
from rl.cluster.config_check import ConfigCheckError
from rl.cluster.fake_config import FakeScale

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CLUSTER_YAML = os.path.join(REPO, "cluster.yaml")
SERVE_CONFIG = os.path.join(REPO, "serve_config.yaml")

MINIMAL_SERVE = {
    "applications": [
        {"name": "encore", "route_prefix": "/", "import_path": "services.app:build_app"}
    ]
}


@pytest.fixture(autouse=True)
def _run_in_repo(monkeypatch):
    # cluster.yaml's file_mounts source "." is resolved against the working directory,
    # as `ray up` does.
    monkeypatch.chdir(REPO)


@pytest.fixture()
def cluster_config() -> dict:
    with open(CLUSTER_YAML) as handle:
        return yaml.safe_load(handle)


def _problems(config: dict) -> list[str]:
    spec, problems = cluster.check_cluster_config(config, "cluster.yaml")
    assert (spec is None) == bool(problems)
    return problems


def test_repo_cluster_yaml_is_valid(cluster_config):
    spec = cluster.validate_cluster_config(cluster_config)
    assert spec.provider_type == "aws"
    assert spec.head_node_type == cluster.HEAD_NODE_TYPE
    names = {t.name for t in spec.worker_types}
    assert names == {"cpu_worker", "train_worker"}
    train = next(t for t in spec.node_types if t.name == "train_worker")
    serve = next(t for t in spec.node_types if t.name == "cpu_worker")
    assert train.resources["CPU"] > serve.resources["CPU"]  # the larger type trains
    assert spec.idle_timeout_minutes > 0


def test_schema_violation_is_reported_with_its_path(cluster_config):
    bad = copy.deepcopy(cluster_config)
    bad["available_node_types"]["cpu_worker"]["resources"]["CPU"] = "eight"
    bad["max_workers"] = "ten"
    problems = _problems(bad)
    assert any("available_node_types.cpu_worker.resources.CPU" in p for p in problems)
    assert any(p.startswith("cluster.yaml: max_workers:") for p in problems)
    assert all("Ray cluster schema" in p for p in problems)


def test_unknown_field_is_refused(cluster_config):
    bad = copy.deepcopy(cluster_config)
    bad["available_node_types"]["cpu_worker"]["min_worker"] = 1  # typo of min_workers
    problems = _problems(bad)
    assert any("min_worker" in p and "cpu_worker" in p for p in problems)


def test_head_node_type_must_exist(cluster_config):
    bad = copy.deepcopy(cluster_config)
    bad["head_node_type"] = "head"
    problems = _problems(bad)
    assert any("head_node_type 'head' is not one of available_node_types" in p for p in problems)


def test_max_below_min_and_missing_cpu_and_idle(cluster_config):
    bad = copy.deepcopy(cluster_config)
    bad["available_node_types"]["train_worker"]["min_workers"] = 3
    bad["available_node_types"]["train_worker"]["max_workers"] = 1
    del bad["available_node_types"]["cpu_worker"]["resources"]["CPU"]
    bad["idle_timeout_minutes"] = 0
    problems = _problems(bad)
    text = "\n".join(problems)
    assert "train_worker: max_workers (1) must be >= min_workers (3)" in text
    assert "cpu_worker.resources must declare CPU" in text
    assert "idle_timeout_minutes must be set and > 0" in text


def test_sum_of_min_workers_over_global_max(cluster_config):
    bad = copy.deepcopy(cluster_config)
    bad["max_workers"] = 1
    bad["available_node_types"]["cpu_worker"]["min_workers"] = 1
    bad["available_node_types"]["train_worker"]["min_workers"] = 1
    assert any("min_workers" in p and "max_workers" in p for p in _problems(bad))


def test_cloud_config_must_autoscale_and_install(cluster_config):
    bad = copy.deepcopy(cluster_config)
    bad["head_start_ray_commands"] = ["ray start --head --port=6379"]
    bad["setup_commands"] = ["echo nothing"]
    text = "\n".join(_problems(bad))
    assert "--autoscaling-config" in text
    assert "setup_commands must install Encore" in text


def test_missing_file_mount_source(cluster_config):
    bad = copy.deepcopy(cluster_config)
    bad["file_mounts"] = {"/home/ubuntu/x": "/nonexistent/encore-source"}
    assert any("/nonexistent/encore-source" in p for p in _problems(bad))


def test_bad_serve_config_is_refused():
    bad = {
        "http_options": {"port": "eighty"},
        "applications": [
            {
                "name": "encore",
                "import_path": "services.app:build_app",
                "deployments": [{"name": "Scorer", "num_replicas": -1}],
            }
        ],
    }
    schema, problems = cluster.check_serve_config(bad, "serve_config.yaml", check_imports=False)
    assert schema is None
    text = "\n".join(problems)
    assert "http_options.port" in text
    assert "num_replicas" in text
    assert all("(Serve schema)" in p for p in problems)


def test_serve_import_path_must_be_importable():
    config = copy.deepcopy(MINIMAL_SERVE)
    config["applications"][0]["import_path"] = "services.no_such_module:build_app"
    _, problems = cluster.check_serve_config(config, "serve_config.yaml")
    assert any("services.no_such_module" in p and "not importable" in p for p in problems)


def test_replica_that_fits_no_node_type(cluster_config):
    spec = cluster.validate_cluster_config(cluster_config)
    config = copy.deepcopy(MINIMAL_SERVE)
    config["applications"][0]["deployments"] = [
        {"name": "Scorer", "ray_actor_options": {"num_gpus": 1}},
        {"name": "Retriever", "autoscaling_config": {"max_replicas": 1000}},
    ]
    _, problems = cluster.check_serve_config(config, "serve_config.yaml", spec, check_imports=False)
    text = "\n".join(problems)
    assert "'Scorer': a replica needs {'CPU': 1.0, 'GPU': 1.0}" in text
    assert "the autoscaler could never place it" in text
    assert "'Retriever': 1000 replicas x 1 CPU = 1000 CPUs, more than the cluster's 128" in text


def test_storage_checks(tmp_path):
    catalog = tmp_path / "catalog.parquet"
    catalog.write_bytes(b"x")
    good = {"catalog": str(catalog), "registry": str(tmp_path / "registry")}
    assert storage_check.check_storage(good) == []
    # The write probe leaves no trace: checking a config creates no empty data folders.
    assert not (tmp_path / "registry").exists()

    blocked = tmp_path / "read-only"
    blocked.mkdir()
    blocked.chmod(0o500)
    try:
        problems = storage_check.check_storage(
            {
                "catalog": str(tmp_path / "missing.parquet"),
                "registry": str(blocked / "registry"),
                "logs": "nosuchscheme://bucket/logs",
            }
        )
    finally:
        blocked.chmod(0o700)
    text = "\n".join(problems)
    assert "catalog URI" in text and "does not exist" in text
    if os.geteuid() != 0:  # root writes anywhere
        assert "registry URI" in text and "is not writable" in text
    assert "logs URI 'nosuchscheme://bucket/logs'" in text


def test_unreachable_object_store_is_a_clear_error():
    # An S3 endpoint nobody listens on: the probe fails (after the SDK's retries, ~6 s).
    uri = "s3://encore-bucket/logs?endpoint_override=127.0.0.1:9&scheme=http"
    problem = storage_check.check_storage_uri(uri, "logs", must_exist=False, writable=True)
    assert problem is not None and "is unreachable" in problem and "127.0.0.1:9" in problem


def test_validate_deployment_lists_every_problem(tmp_path, cluster_config):
    bad_cluster = copy.deepcopy(cluster_config)
    bad_cluster["head_node_type"] = "nope"
    cluster_path = tmp_path / "cluster.yaml"
    cluster_path.write_text(yaml.safe_dump(bad_cluster))
    serve_path = tmp_path / "serve_config.yaml"
    serve_path.write_text("applications: [{name: encore}]\n")  # no import_path
    with pytest.raises(ConfigCheckError) as caught:
        cluster.validate_deployment(
            str(cluster_path), str(serve_path), {"catalog": str(tmp_path / "absent.parquet")}
        )
    message = str(caught.value)
    assert "head_node_type 'nope'" in message
    assert "import_path" in message
    assert "absent.parquet" in message
    assert len(caught.value.problems) >= 3


def test_cli_validate_exit_codes(tmp_path, capsys, cluster_config):
    from rl.cli import main

    serve_path = tmp_path / "serve_config.yaml"
    serve_path.write_text(yaml.safe_dump(MINIMAL_SERVE))
    storage = ["--catalog", CLUSTER_YAML, "--logs", str(tmp_path / "logs"),
               "--registry", str(tmp_path / "registry")]  # fmt: skip
    assert main(["cluster", "validate", CLUSTER_YAML, str(serve_path), *storage]) == 0
    assert "ok" in capsys.readouterr().out
    broken = tmp_path / "cluster.yaml"
    broken.write_text("cluster_name: [unclosed\n")
    assert main(["cluster", "validate", str(broken), str(serve_path), *storage]) == 1
    assert "not valid YAML" in capsys.readouterr().err


def test_fake_config_keeps_node_types_and_scales_down(cluster_config):
    scale = FakeScale(cpus={"ray.head.default": 0, "cpu_worker": 1, "train_worker": 2},
                      max_workers={"cpu_worker": 3, "train_worker": 1})  # fmt: skip
    fake = fake_config.fake_cluster_config(cluster_config, scale, "127.0.0.1:26379")
    types = fake["available_node_types"]
    assert set(types) == set(cluster_config["available_node_types"])
    assert fake["provider"]["type"] == "fake_multinode"
    assert fake["provider"]["gcs_address"] == "127.0.0.1:26379"
    assert types["cpu_worker"]["resources"]["CPU"] == 1
    assert types["cpu_worker"]["max_workers"] == 3
    assert types["train_worker"]["resources"]["encore_learner"] == 4  # custom resource kept
    assert fake["max_workers"] == 4
    # The generated config passes Ray's schema and rules too.
    assert cluster.validate_cluster_config(fake, "fake").provider_type == "fake_multinode"
    with pytest.raises(ValueError, match="idle_timeout_minutes must be > 0"):
        FakeScale(cpus={}, max_workers={}, idle_timeout_minutes=0)


@pytest.mark.slow
@pytest.mark.ray
def test_proof_on_fake_multinode_cluster():
    """``encore cluster proof``: nodes are added under load, a job trains and registers."""
    from rl import paths
    from rl.cluster.fake import make_work_dir, processes_with_marker, remove_work_dir
    from rl.cluster.proof import ProofConfig, run_proof

    if not os.path.exists(SERVE_CONFIG):
        pytest.skip("serve_config.yaml not in the repo yet")
    if not os.path.exists(os.path.join(paths.default_embedding_uri(), "latents.parquet")):
        pytest.skip("no trained song embedding (run `encore train-embedding`)")
    config = ProofConfig(cluster_yaml=CLUSTER_YAML, serve_config=SERVE_CONFIG, load_seconds=45)
    # Not pytest's tmp_path: Ray's unix socket paths under the work dir must stay < 108 bytes.
    work_dir = make_work_dir()
    try:
        report = run_proof(config, work_dir=work_dir)
    finally:
        remove_work_dir(work_dir)
    assert report.jobs.get("encore-train") == "SUCCEEDED"
    assert report.registry_versions, "the training job registered no version"
    assert report.peak_nodes["cpu_worker"] >= 2, "the autoscaler added no serving node"
    assert report.requests_ok > 0
    assert max(report.peak_replicas.values()) >= 2, "Serve added no replica under load"
    assert report.processes_stopped > 0
    assert not processes_with_marker("never-a-marker")
