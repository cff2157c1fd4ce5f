"""A version's song table is served with its weights: the Scorer adds each candidate's
features from the table of the version it runs, a song the table does not know gets the
priors and can still be picked, and a promotion swaps table and weights together."""

from __future__ import annotations

import numpy as np
import pytest

from rl.decision.observation import ObservationLayout, encode_context
from rl.decision.policies import EpsilonGreedyPolicy, sample_actions
from rl.longterm.song_table import (
    FEATURE_NAMES,
    ObservationSongFeatures,
    SongTableConfig,
    fit_song_table_arrays,
)
from rl.registry import ModelRegistry
from rl.training.config import TrainConfig
from rl.training.module import build_module

BASE = ObservationLayout(k=4, latent_dim=3)
LAYOUT = ObservationLayout(k=4, latent_dim=3, song_feature_dim=len(FEATURE_NAMES))
CATALOG_LATENTS = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
CATALOG_IDS = np.array([f"s{i}" for i in range(40)])


def make_table(seed: int):
    rng = np.random.default_rng(seed)
    shown = CATALOG_IDS[:30]  # s30..s39 are unknown to the table
    impressions = rng.integers(5, 50, 30)
    table = fit_song_table_arrays(
        shown, impressions, rng.binomial(impressions, 0.5),
        shown[rng.integers(0, 30, 200)], rng.normal(size=(200, 3)), rng.poisson(1.0, 200),
        horizon_days=10, config=SongTableConfig(),
    )  # fmt: skip
    table.latents = CATALOG_LATENTS[[int(t[1:]) for t in table.track_ids]]
    return table


def base_obs(candidates: np.ndarray, rng) -> np.ndarray:
    n = len(candidates)
    return BASE.build(
        CATALOG_LATENTS[rng.integers(0, 40, n)], rng.normal(size=(n, 3)),
        encode_context(rng.integers(0, 24, n), rng.integers(0, 7, n)),
        CATALOG_LATENTS[candidates], np.zeros((n, 4, BASE.n_betas)), np.ones((n, 4)),
    )  # fmt: skip


def register(registry: ModelRegistry, tmp_path, name: str, table, seed: int):
    import torch

    torch.manual_seed(seed)
    root = tmp_path / name
    build_module(LAYOUT, hidden_sizes=(8,)).save_to_path(
        str(root / "learner_group" / "learner" / "rl_module" / "default_policy")
    )
    return registry.register(
        str(root), algo="offline-ppo", train_config=TrainConfig(hidden_sizes=(8,)).to_dict(),
        layout=LAYOUT, data={}, metrics={}, song_table=table,
    )  # fmt: skip


def test_lookup_appends_the_tables_features(rng) -> None:
    table = make_table(1)
    lookup = ObservationSongFeatures(table, LAYOUT)
    candidates = rng.integers(0, 40, size=(64, 4))
    obs = base_obs(candidates, rng)
    full = lookup(obs)
    assert full.shape == (64, LAYOUT.size)
    np.testing.assert_array_equal(full[:, : BASE.size], obs)  # the base part is untouched
    taste = BASE.split(obs)["user_taste"]
    expected = table.candidate_features_by_id(CATALOG_IDS[candidates], taste)
    np.testing.assert_allclose(LAYOUT.split(full)["candidate_song_features"], expected, rtol=1e-6)
    assert lookup(full) is not None and lookup(full).shape == full.shape  # passes through


def test_a_version_serves_its_table_and_an_unknown_song_can_be_picked(tmp_path, rng) -> None:
    from services.core.scoring import load_registry_policy

    registry = ModelRegistry(str(tmp_path / "registry"))
    entry = register(registry, tmp_path, "a", make_table(1), seed=0)
    assert entry.data["song_table_checksums"]
    served = load_registry_policy(registry.uri, entry.version, BASE)  # the served layout
    # Every candidate is a song the table never saw: priors, finite, and picked.
    unknown = rng.integers(30, 40, size=(200, 4))
    probabilities = served.policy.action_probabilities(base_obs(unknown, rng))
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    # One new song among known ones: with the served exploration it is picked sometimes.
    mixed = np.concatenate([rng.integers(0, 30, size=(2000, 3)), np.full((2000, 1), 35)], 1)
    explore = EpsilonGreedyPolicy(served.policy, 0.1)
    actions, _ = sample_actions(explore.action_probabilities(base_obs(mixed, rng)), rng)
    assert (actions == 3).sum() >= 0.1 / 4 * 2000 * 0.5


def test_promotion_swaps_table_and_weights_together(tmp_path) -> None:
    from services.core.scoring import LOGGING_VERSION, PolicySlot, ServingPolicy

    registry = ModelRegistry(str(tmp_path / "registry"))
    first = register(registry, tmp_path, "a", make_table(1), seed=0)
    second = register(registry, tmp_path, "b", make_table(2), seed=1)
    fallback = ServingPolicy(EpsilonGreedyPolicy(_Uniform(), 0.0), LOGGING_VERSION)
    slot = PolicySlot(BASE, fallback, registry.uri)
    registry.promote(first.version)
    assert slot.sync() is None and slot.active.version == first.version
    table_a = slot.active.policy.song_features.table
    registry.promote(second.version)
    assert slot.sync() is None and slot.active.version == second.version
    table_b = slot.active.policy.song_features.table
    assert not np.array_equal(table_a.clickiness_logit, table_b.clickiness_logit)
    np.testing.assert_array_equal(
        table_b.clickiness_logit, registry.load_song_table(second.version).clickiness_logit
    )


def test_a_tampered_table_is_refused(tmp_path) -> None:
    from rl.registry import RegistryError

    registry = ModelRegistry(str(tmp_path / "registry"))
    entry = register(registry, tmp_path, "a", make_table(1), seed=0)
    meta = tmp_path / "registry" / "versions" / entry.version / "song_table" / "song_table.json"
    meta.write_text(meta.read_text().replace('"horizon_days": 10', '"horizon_days": 11'))
    with pytest.raises(RegistryError, match="song table"):
        registry.verify(entry.version)


class _Uniform:
    name = "uniform"
    layout = BASE

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        return np.full((len(obs), 4), 0.25)
