"""Fixtures for the commands that train from a simulated world (``encore loop``, ``encore
tune``): generated data under the test's folder, and the shared trained song VAE in place
of the project's (trained once per run by ``trained_embedding``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def simulated_project(tmp_path, trained_embedding, monkeypatch):
    """``ENCORE_DATA`` under ``tmp_path`` and ``ensure_song_embedding`` answering with the
    run's trained embedding; yields that embedding."""
    monkeypatch.setenv("ENCORE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(
        "rl.songs.embedding.ensure_song_embedding", lambda *a, **k: trained_embedding
    )
    return trained_embedding
