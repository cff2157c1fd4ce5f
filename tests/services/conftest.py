"""Fixtures for the served app: a small trained embedding, a registry of real modules, and
the one way these tests start Ray and Serve (``serve_on_local_ray``)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rl.decision.observation import ObservationLayout
from rl.registry import MODULE_SUBPATH, ModelRegistry


def register_module_version(
    registry: ModelRegistry, layout: ObservationLayout, work_dir: str, seed: int
) -> str:
    """Register a freshly initialised actor-critic RLModule as a registry version.

    A real RLModule checkpoint in the layout RLlib writes (learner_group/.../default_policy),
    without spending minutes training: serving only needs a loadable, valid policy.
    """
    import torch

    from rl.training.module import build_module

    torch.manual_seed(seed)
    module = build_module(layout, hidden_sizes=(16,))
    checkpoint = os.path.join(work_dir, f"checkpoint-{seed}")
    module.save_to_path(os.path.join(checkpoint, *MODULE_SUBPATH))
    entry = registry.register(
        checkpoint, algo="test", train_config={"seed": seed}, layout=layout, data={}, metrics={}
    )
    return entry.version


@pytest.fixture(scope="module")
def small_embedding_uri(small_catalog, tmp_path_factory) -> str:
    """A VAE trained for a few epochs on 2,000 real tracks, saved under a tmp dir."""
    from rl.songs.embedding import VAEConfig, train_song_embedding

    uri = str(tmp_path_factory.mktemp("embedding"))
    train_song_embedding(small_catalog, VAEConfig(epochs=3), progress=False).save(uri)
    return uri


def app_config(
    work: Any, embedding_uri: str, registry_uri: str | None = None, **settings: Any
) -> dict[str, Any]:
    """The served app's settings for a test whose files live under the folder ``work``: its
    own registry (unless ``registry_uri``), log and journal, a 0.5 s flush, seed 0;
    ``settings`` add or override (``ServiceConfig`` fields)."""
    return {
        "embedding_uri": embedding_uri,
        "registry_uri": registry_uri or str(work / "registry"),
        "log_uri": str(work / "log"),
        "journal_dir": str(work / "journal"),
        "flush_interval_s": 0.5,
        "seed": 0,
        **settings,
    }


def wait_until_written(client: Any, acknowledged: int, timeout_s: float) -> None:
    """Wait (at most ``timeout_s``) until the app's feedback sink has written every row it
    acknowledged, and at least ``acknowledged``: rows reach parquet on the flush timer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = client.get("/v1/health").json()["feedback"]
        if counts["written_rows"] >= counts["acknowledged_rows"] >= acknowledged:
            return
        time.sleep(0.25)


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_on_local_ray(fast_path: bool = False, **ray_options: object) -> Iterator[None]:
    """A fresh local Ray (2 CPUs, no dashboard) for the block; Serve and Ray shut down after.

    ``fast_path``: start Ray with Serve's direct ingress (services.app.SERVE_FAST_PATH_ENV),
    as ``encore serve`` does; the environment is restored afterwards so the next module
    gets the proxied setup unless it asks too. ``ray_options``: more ``ray.init`` arguments
    (e.g. ``_metrics_export_port``).
    """
    import ray
    from ray import serve

    from services.app import SERVE_FAST_PATH_ENV, use_serve_fast_path

    saved_env = {name: os.environ.get(name) for name in SERVE_FAST_PATH_ENV}
    if fast_path:
        use_serve_fast_path()
    ray.init(address="local", num_cpus=2, include_dashboard=False, **ray_options)  # type: ignore[arg-type]
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A real redis-server of this test session (installed by ``make install``), on a free
    loopback port, its files in a tmp dir; stopped at the end."""
    from services.redis_server import start_redis_server

    server = start_redis_server(str(tmp_path_factory.mktemp("redis")))
    try:
        yield server.url
    finally:
        server.stop()
