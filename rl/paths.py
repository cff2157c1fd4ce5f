"""Default locations on the embedded single-machine setup.

The real data lives in ``../shared/data`` beside the project checkout (read-only); all
generated data goes under ``./data`` (git-ignored). Both can be overridden with the
``ENCORE_SHARED_DATA`` and ``ENCORE_DATA`` environment variables or per command flags.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> str:
    return os.environ.get("ENCORE_SHARED_DATA", str(PROJECT_ROOT.parent / "shared" / "data"))


def data_dir() -> str:
    """Root URI of generated data (embedding, logs, registry)."""
    return os.environ.get("ENCORE_DATA", str(PROJECT_ROOT / "data"))


def default_catalog_uri() -> str:
    return os.path.join(shared_data_dir(), "catalog", "spotify_songs.parquet")


def default_mssd_dir() -> str:
    return os.path.join(shared_data_dir(), "mssd_sample")


def default_embedding_uri() -> str:
    return os.path.join(data_dir(), "embedding")


def default_log_uri() -> str:
    return os.path.join(data_dir(), "logs", "sim")


def default_registry_uri() -> str:
    return os.path.join(data_dir(), "registry")
