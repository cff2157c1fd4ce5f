"""Clickiness: a fitted P(listen | rec) recovers a known logistic model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rl.longterm.clickiness import ClickinessModel, clickiness_features, impressions_from_decisions


def synthetic(seed: int, n: int = 20000):
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(n, 3))
    item = rng.normal(size=(n, 3))
    context = rng.normal(size=(n, 4))
    state = np.where(rng.random((n, 2)) < 0.3, rng.random((n, 2)), 0.0)
    features = clickiness_features(taste, item, context, state)
    logit = -0.5 + 1.5 * (taste * item).sum(1) + 2.0 * state[:, 1] + 0.5 * context[:, 0]
    p = 1 / (1 + np.exp(-logit))
    return features, rng.random(n) < p, p


@pytest.mark.parametrize("hidden_units", [0, 16])
def test_recovers_known_probabilities(hidden_units: int) -> None:
    features, listened, truth = synthetic(0)
    model = ClickinessModel(hidden_units=hidden_units, epochs=15, seed=0).fit(features, listened)
    predicted = model.predict_listen(features)
    assert np.corrcoef(predicted, truth)[0, 1] > 0.95
    assert abs(predicted.mean() - listened.mean()) < 0.02
    base = listened.mean()
    base_loglik = base * np.log(base) + (1 - base) * np.log(1 - base)
    assert model.score(features, listened) > base_loglik + 0.1
    proba = model.predict_proba(features[:5])
    assert proba.shape == (5, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    # Leading dims are preserved (B, K, F) -> (B, K).
    assert model.predict_listen(features[:6].reshape(2, 3, -1)).shape == (2, 3)


def test_fit_is_reproducible_with_seed() -> None:
    features, listened, _ = synthetic(1, n=3000)
    a = ClickinessModel(epochs=3, seed=5).fit(features, listened).predict_listen(features)
    b = ClickinessModel(epochs=3, seed=5).fit(features, listened).predict_listen(features)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="hidden_units must be >= 0"):
        ClickinessModel(hidden_units=-1)


def test_impressions_from_decisions_picks_chosen_candidate_state() -> None:
    latents = np.arange(12, dtype=np.float32).reshape(4, 3)
    track_ids = np.array(["a", "b", "c", "d"], dtype=object)
    decisions = pd.DataFrame(
        {
            "chosen_track_id": ["b", "zzz", "d"],
            "chosen_index": [1, 0, 0],
            "user_taste": [np.ones(3), np.ones(3), np.zeros(3)],
            "hour": [10, 11, 12],
            "weekday": [0, 1, 2],
            "candidate_relationship": [
                np.array([0.1, 0.2, 0.3, 0.4]),
                np.zeros(2),
                np.array([0.5, 0.6]),
            ],
            "listened": [True, False, False],
        }
    )
    features, listened = impressions_from_decisions(decisions, latents, track_ids, n_betas=2)
    assert features.shape == (2, 3 * 3 + 4 + 2 + 1)
    np.testing.assert_array_equal(listened, [True, False])
    np.testing.assert_allclose(features[0, 3:6], latents[1])
    np.testing.assert_allclose(features[0, -3:-1], [0.3, 0.4])
    np.testing.assert_allclose(features[1, -3:], [0.5, 0.6, 1.0])
