"""Shared fixtures: the real catalog, a small trained embedding, a tiny catalog slice."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from rl import paths
from rl.songs.catalog import Catalog, catalog_from_frame, load_catalog

# Keep tests off the user's generated data and make torch/BLAS polite on 2 cores.
os.environ.setdefault("ENCORE_DATA", "/tmp/encore-test-data")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def real_catalog() -> Catalog:
    if not os.path.exists(paths.default_catalog_uri()):
        pytest.skip(f"real catalog not found at {paths.default_catalog_uri()}")
    return load_catalog()


@pytest.fixture(scope="session")
def small_catalog(real_catalog: Catalog) -> Catalog:
    """The first 2,000 deduplicated real tracks (fast enough to train a VAE on in seconds)."""
    import pyarrow.parquet as pq

    frame = pq.read_table(paths.default_catalog_uri()).to_pandas()
    frame = frame.drop_duplicates("track_id").head(2000)
    return catalog_from_frame(frame, source="small catalog")


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def trained_embedding(real_catalog, tmp_path_factory):
    """The default VAE trained on the real catalog (about 20 s), shared by the whole run."""
    from rl.songs.embedding import ensure_song_embedding

    cache = os.environ.get("ENCORE_TEST_EMBEDDING") or str(
        tmp_path_factory.getbasetemp().parent / "encore-embedding"
    )
    return ensure_song_embedding(cache, progress=False)


@pytest.fixture(scope="module")
def ray_local():
    """A private local Ray (2 CPUs, no dashboard, workers' logs kept off the test output)
    for one test module; yields the ``ray`` module. ``address="local"`` never joins a stale
    cluster left on the machine."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True)  # fmt: skip
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True, scope="module")
def _ray_is_shut_down_after_each_module():
    """A command under test may start Ray and leave it running (as a CLI process would,
    exiting right after); shut it down so the next module's fixtures start their own."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
