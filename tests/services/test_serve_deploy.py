"""serve_config.yaml through Serve's declarative path, and ``reconfigure`` without restarts.

``serve deploy serve_config.yaml`` posts the file to the dashboard, which validates it as a
``ServeDeploySchema`` and hands it to the controller (``apply_config``). This test does the
last two steps itself on a local Ray (the dashboard is off in tests): the real file, with
only its data paths and ports pointed at a tmp dir, is deployed; then the Scorer's
``user_config`` is changed and deployed again, as an operator would by editing the file
and re-running ``serve deploy``. The Scorer must pin the version in place: same replicas,
no restart, no failed request.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ray

CONFIG_FILE = Path(__file__).resolve().parents[2] / "serve_config.yaml"


def _deploy_config(raw: dict, args: dict, http_port: int, grpc_port: int, scorer_user_config):
    raw = yaml.safe_load(yaml.safe_dump(raw))  # a deep copy
    raw["http_options"]["port"] = http_port
    raw["grpc_options"]["port"] = grpc_port
    app = raw["applications"][0]
    app["args"].update(args)
    for deployment in app["deployments"]:
        if deployment["name"] == "Scorer":
            deployment["user_config"] = scorer_user_config
    return raw


def _wait_running(client, timeout_s: float = 180.0) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get("encore")
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status == "DEPLOY_FAILED":
            raise AssertionError(f"deploy failed: {status.message}")
        time.sleep(0.5)
    raise AssertionError("the app never reached RUNNING")


def test_serve_deploy_of_the_config_file_and_reconfigure_without_restart(
    small_embedding_uri, tmp_path, redis_url
):
    import httpx
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    from rl.decision.observation import ObservationLayout
    from rl.registry import ModelRegistry
    from rl.songs.embedding import load_song_embedding
    from tests.services.conftest import free_port, register_module_version, serve_on_local_ray

    registry = ModelRegistry(str(tmp_path / "registry"))
    pinned = register_module_version(registry, ObservationLayout(), str(tmp_path), seed=7)
    args = {
        "embedding_uri": small_embedding_uri,
        "registry_uri": registry.uri,
        "log_uri": str(tmp_path / "log"),
        "journal_dir": str(tmp_path / "journal"),
        "user_store": redis_url,  # the file's shared store, on this test's own redis-server
        "user_store_namespace": "serve-deploy",
    }
    raw = yaml.safe_load(CONFIG_FILE.read_text())
    http_port, grpc_port = free_port(), free_port()
    track = str(load_song_embedding(small_embedding_uri).track_ids[0])

    with serve_on_local_ray():
        first = ServeDeploySchema.model_validate(
            _deploy_config(raw, args, http_port, grpc_port, {"pinned_version": None})
        )
        client = serve_start(
            http_options=first.http_options.model_dump(),
            grpc_options=first.grpc_options.model_dump(),
            global_logging_config=first.logging_config,
        )
        client.deploy_apps(first)
        _wait_running(client)
        url = f"http://127.0.0.1:{http_port}"
        with httpx.Client(base_url=url, timeout=30) as http:
            body = {"user_id": "ops", "track_id": track}
            answer = http.post("/v1/recommend", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == "logging"  # nothing promoted, nothing pinned
            replicas_before = set(http.get("/v1/models").json()["serving"])

            # The operator edits the Scorer's user_config and runs `serve deploy` again.
            second = ServeDeploySchema.model_validate(
                _deploy_config(raw, args, http_port, grpc_port, {"pinned_version": pinned})
            )
            client.deploy_apps(second)
            failures, versions = 0, []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                answer = http.post("/v1/recommend", json=body)
                if answer.status_code != 200:
                    failures += 1
                else:
                    versions.append(answer.json()["model_version"])
                    if versions[-1] == pinned:
                        break
            assert versions and versions[-1] == pinned, versions[-5:]
            assert failures == 0
            models = http.get("/v1/models").json()
            # reconfigure() ran in the same replica actors: no replica was replaced.
            assert set(models["serving"]) <= replicas_before
            assert all(entry["version"] == pinned for entry in models["serving"].values())
