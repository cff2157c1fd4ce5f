"""Fixtures for the served app: a small trained embedding and a registry of real modules."""

from __future__ import annotations

import os

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
