"""Model registry: versions, listing, atomic promotion, refusal of corrupt versions."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from rl.decision.observation import ObservationLayout
from rl.registry import ModelRegistry, PolicyScorer, RegistryError
from rl.training.config import TrainConfig
from rl.training.module import build_module

LAYOUT = ObservationLayout(k=4, latent_dim=5)


def fake_run_checkpoint(tmp_path, name: str, seed: int) -> str:
    """An algorithm-checkpoint-shaped directory holding a real saved RLModule."""
    import torch

    torch.manual_seed(seed)
    root = tmp_path / name
    build_module(LAYOUT, hidden_sizes=(8,)).save_to_path(
        str(root / "learner_group" / "learner" / "rl_module" / "default_policy")
    )
    (root / "rllib_checkpoint.json").write_text("{}")
    return str(root)


def register(registry: ModelRegistry, tmp_path, name: str, seed: int, parent=None):
    return registry.register(
        fake_run_checkpoint(tmp_path, name, seed),
        algo="offline-ppo",
        train_config=TrainConfig(hidden_sizes=(8,)).to_dict(),
        layout=LAYOUT,
        data={"paths": [f"/logs/{name}.parquet"], "rows": 100 + seed},
        metrics={"final_total_loss": 0.5},
        parent=parent,
    )


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(str(tmp_path / "registry"))


def test_versions_listing_and_parent(registry, tmp_path):
    first = register(registry, tmp_path, "a", 0)
    second = register(registry, tmp_path, "b", 1, parent=first.version)
    assert [v.version for v in registry.list_versions()] == ["v0001", "v0002"]
    got = registry.get("v0002")
    assert got.parent == "v0001" and got.data["rows"] == 101
    assert TrainConfig.from_dict(got.train_config).hidden_sizes == (8,)
    assert second.checksums and registry.production_version() is None
    with pytest.raises(RegistryError, match="not found"):
        register(registry, tmp_path, "c", 2, parent="v0099")


def test_promote_moves_pointer_and_keeps_previous(registry, tmp_path):
    register(registry, tmp_path, "a", 0)
    register(registry, tmp_path, "b", 1)
    registry.promote("v0001")
    registry.promote("v0002")
    pointer = json.loads((tmp_path / "registry" / "PRODUCTION.json").read_text())
    assert pointer["version"] == "v0002" and pointer["previous"] == "v0001"
    with pytest.raises(RegistryError):
        registry.promote("v0042")
    assert registry.production_version() == "v0002"


def test_promote_is_atomic_for_concurrent_readers(registry, tmp_path):
    register(registry, tmp_path, "a", 0)
    register(registry, tmp_path, "b", 1)
    registry.promote("v0001")
    seen, errors, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add(registry.production_version())
            except Exception as exc:  # a torn write would show up here
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(60):
        registry.promote("v0002" if i % 2 == 0 else "v0001")
    stop.set()
    thread.join()
    assert not errors
    assert seen <= {"v0001", "v0002"}


def test_corrupt_or_incompatible_versions_are_refused(registry, tmp_path):
    entry = register(registry, tmp_path, "a", 0)
    register(registry, tmp_path, "b", 1)
    module = registry.load_module(entry.version)
    assert module.layout == LAYOUT
    with pytest.raises(RegistryError, match="incompatible"):
        registry.load_module(entry.version, expected_layout=ObservationLayout(k=3))

    state_file = (
        tmp_path / "registry/versions/v0001/checkpoint/learner_group/learner/rl_module"
        "/default_policy/module_state.pkl"
    )
    data = bytearray(state_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state_file.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="corrupt"):
        registry.load_module("v0001")
    with pytest.raises(RegistryError, match="corrupt"):
        registry.promote("v0001")

    manifest = tmp_path / "registry/versions/v0002/manifest.json"
    manifest.write_text("{not json")
    with pytest.raises(RegistryError, match="JSON"):
        registry.get("v0002")
    assert [v.version for v in registry.list_versions()] == ["v0001"]  # unreadable skipped
    manifest.write_text(json.dumps({"format": "something-else/9"}))
    with pytest.raises(RegistryError, match="format"):
        registry.load_module("v0002")


def test_policy_scorer_meets_decision_policy_protocol(registry, tmp_path):
    from rl.decision.policies import DecisionPolicy

    register(registry, tmp_path, "a", 0)
    registry.promote("v0001")
    scorer = PolicyScorer.from_registry(registry.uri)
    assert isinstance(scorer, DecisionPolicy) and scorer.name == "offline-ppo:v0001"
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, LAYOUT.size)).astype(np.float32)
    obs[:, -4:] = [1, 1, 0, 1]
    probs = scorer.action_probabilities(obs)
    assert probs.shape == (5, 4) and np.all(probs[:, 2] == 0)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert scorer.value(obs).shape == (5,)
    greedy = PolicyScorer.from_registry(registry, "v0001", greedy=True)
    picks = greedy.action_probabilities(obs)
    np.testing.assert_array_equal(picks.argmax(1), probs.argmax(1))
    assert set(np.unique(picks)) == {0.0, 1.0} and greedy.name.endswith("(greedy)")
    with pytest.raises(ValueError, match="obs must be"):
        scorer.action_probabilities(obs[:, :-1])
