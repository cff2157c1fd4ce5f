"""Stickiness: regularised least squares vs a direct solve, discovery/state datasets vs loops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rl.longterm.relationship_history import listen_days_from_frame, states_from_listen_days
from rl.longterm.stickiness import (
    StateStickinessModel,
    StickinessModel,
    discovery_dataset,
    shrunken_ridge,
    state_dataset,
    with_intercept,
)
from rl.longterm.taste import TasteModel

BETAS = (0.5, 0.9, 0.97, 0.99)


def direct_solve(x, y, l2, prior):
    """argmin ||y - Xv||^2 + l2 ||v - prior||^2 as an augmented ordinary least squares."""
    p = x.shape[1]
    x_aug = np.vstack([x, np.sqrt(l2) * np.eye(p)])
    y_aug = np.concatenate([y, np.sqrt(l2) * prior])
    return np.linalg.lstsq(x_aug, y_aug, rcond=None)[0]


@pytest.mark.parametrize("l2", [0.01, 1.0, 50.0])
def test_shrunken_ridge_matches_direct_solve(l2: float) -> None:
    rng = np.random.default_rng(0)
    n, p, g = 400, 4, 7
    x = rng.normal(size=(n, p))
    y = rng.normal(size=n) * 3
    groups = rng.integers(0, g - 1, size=n)  # last group gets no rows
    prior = rng.normal(size=(g, p))
    got = shrunken_ridge(x, y, groups, g, l2, prior)
    for group in range(g):
        rows = groups == group
        np.testing.assert_allclose(
            got[group], direct_solve(x[rows], y[rows], l2, prior[group]), rtol=1e-8, atol=1e-10
        )
    np.testing.assert_allclose(got[g - 1], prior[g - 1])  # no data: exactly the prior
    with pytest.raises(ValueError, match="l2 must be > 0"):
        shrunken_ridge(x, y, groups, g, 0.0, prior)


def test_stickiness_model_recovers_vectors_and_falls_back_to_prior() -> None:
    rng = np.random.default_rng(1)
    n_items, dim = 5, 3
    true = rng.normal(size=(n_items, dim + 1)) + np.array([8.0, 0, 0, 0])
    counts = np.array([3000, 3000, 3000, 2, 0])  # item 3: long tail, item 4: never discovered
    items = np.repeat(np.arange(n_items), counts)
    taste = rng.normal(size=(len(items), dim))
    y = np.einsum("np,np->n", with_intercept(taste), true[items]) + rng.normal(size=len(items))
    model = StickinessModel(l2=5.0, mean_shrinkage=10.0).fit(taste, y, items, n_items)
    for item in range(3):
        np.testing.assert_allclose(model.stickiness_vectors_[item], true[item], atol=0.1)
        rows = items == item
        np.testing.assert_allclose(
            model.stickiness_vectors_[item],
            direct_solve(with_intercept(taste[rows]), y[rows], 5.0, model.pooled_vector_),
            rtol=1e-8,
        )
    pooled = direct_solve(with_intercept(taste), y, 1e-3, np.zeros(dim + 1))
    np.testing.assert_allclose(model.pooled_vector_, pooled, rtol=1e-6)
    np.testing.assert_allclose(model.stickiness_vectors_[4], pooled)  # falls back to the prior
    # Two discoveries barely move the long-tail item away from the prior.
    assert np.linalg.norm(model.stickiness_vectors_[3] - pooled) < np.linalg.norm(true[3] - pooled)
    # Unpersonalised shrunken mean: (sum y + kappa * mean) / (n + kappa).
    expected = (np.bincount(items, y, n_items) + 10.0 * y.mean()) / (counts + 10.0)
    np.testing.assert_allclose(model.unpersonalised_, expected)
    assert model.predict_unpersonalised(np.array([4]))[0] == pytest.approx(y.mean())
    # predict broadcasts over (B, K) candidate items and clips to the window.
    predicted = model.predict(taste[:2], np.array([[0, 1], [2, 4]]))
    assert predicted.shape == (2, 2) and (predicted >= 0).all() and (predicted <= 59).all()


def test_group_prior_is_informed() -> None:
    rng = np.random.default_rng(2)
    items = np.repeat(np.arange(4), [500, 500, 0, 0])
    taste = rng.normal(size=(len(items), 2))
    y = np.where(items == 0, 20.0, 2.0) + rng.normal(size=len(items))
    groups = np.array([0, 1, 0, 1])  # item 2 shares item 0's group, item 3 item 1's
    model = StickinessModel(l2=5.0).fit(taste, y, items, 4, item_groups=groups)
    assert model.stickiness_vectors_[2][0] == pytest.approx(
        model.stickiness_vectors_[0][0], abs=0.5
    )
    assert model.stickiness_vectors_[3][0] == pytest.approx(
        model.stickiness_vectors_[1][0], abs=0.5
    )
    assert model.unpersonalised_[2] > 15 and model.unpersonalised_[3] < 5


def random_log(seed: int, n_users=8, n_items=6, n_days=90) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n_days, size=(n_users, n_items))
    rows = []
    for u in range(n_users):
        for i in range(n_items):
            if rng.random() < 0.3:
                continue
            stick = rng.random() * 0.5
            for day in range(first[u, i], n_days):
                if day == first[u, i] or rng.random() < stick:
                    rows.append((f"u{u}", f"t{i}", day, rng.random() * 5, rng.random() < 0.5))
    return pd.DataFrame(rows, columns=["user_id", "track_id", "day", "minutes", "organic"])


def test_discovery_dataset_matches_loop() -> None:
    frame = random_log(3)
    days = listen_days_from_frame(frame)
    latents = np.random.default_rng(0).normal(size=(days.n_items, 2))
    taste = TasteModel(30.0).fit(days, latents)
    data = discovery_dataset(days, taste, horizon_days=60, end_day=90, min_discovery_day=2)
    expected = {}
    for (user, track), rows in frame.groupby(["user_id", "track_id"]):
        d = rows["day"].min()
        if d + 60 <= 90 and d >= 2:
            listen_days = set(rows["day"])
            expected[(user, track)] = (
                d,
                len([t for t in listen_days if d < t < d + 60]),
                rows.loc[rows["day"] < d + 60, "minutes"].sum(),
            )
    got = {
        (days.user_ids[u], days.track_ids[i]): (d, y, m)
        for u, i, d, y, m in zip(
            data.user, data.item, data.discovery_day, data.return_days, data.minutes, strict=False
        )
    }
    assert got.keys() == expected.keys() and len(got) > 5
    for key, (d, y, m) in expected.items():
        assert got[key][0] == d and got[key][1] == y
        assert got[key][2] == pytest.approx(m, rel=1e-5)
    np.testing.assert_allclose(data.taste, taste.transform(data.user, data.discovery_day))


def test_state_dataset_matches_closed_form_and_counts() -> None:
    frame = random_log(4)
    days = listen_days_from_frame(frame)
    latents = np.random.default_rng(0).normal(size=(days.n_items, 2))
    taste = TasteModel(30.0).fit(days, latents)
    data = state_dataset(
        days, taste, BETAS, horizon_days=20, samples_per_pair=3, seed=1, end_day=90
    )
    assert len(data) > 20
    for u, i, d, state, y, organic in zip(
        data.user,
        data.item,
        data.day,
        data.state,
        data.return_days,
        data.organic_today,
        strict=False,
    ):
        users, items, states = states_from_listen_days(days, int(d), BETAS)
        match = (users == u) & (items == i)
        np.testing.assert_allclose(state, states[match][0], atol=1e-6)
        rows = frame[
            (frame["user_id"] == days.user_ids[u]) & (frame["track_id"] == days.track_ids[i])
        ]
        assert y == len(set(rows["day"][(rows["day"] >= d) & (rows["day"] < d + 19)]))
        assert organic == bool(rows.loc[rows["day"] == d, "organic"].any())
        assert d + 19 <= 90
    model = StateStickinessModel(l2=10.0, horizon_days=20).fit(
        data.state, data.taste, data.return_days, data.item, days.n_items
    )
    predicted = model.predict(data.state[:4, None, :], data.taste[:4], data.item[:4, None])
    assert predicted.shape == (4, 1) and np.all((predicted >= 0) & (predicted <= 19))


def test_taste_distance_feature_matches_direct_solve_and_extrapolates_to_far_users() -> None:
    """Returns fall with the taste-to-song distance; discoveries are near the taste, the
    question is far from it. The plain model over-predicts there, the distance one does not."""
    rng = np.random.default_rng(7)
    n_items, dim, n = 30, 3, 6000
    item_latents = rng.normal(size=(n_items, dim))
    items = rng.integers(0, n_items, n)
    near = item_latents[items] + 0.4 * rng.normal(size=(n, dim))  # discovered near the taste
    scale = ((item_latents - item_latents.mean(0)) ** 2).sum(1).mean()
    distance = ((near - item_latents[items]) ** 2).sum(1) / scale
    y = np.maximum(3.0 - 4.0 * distance + rng.normal(size=n) * 0.3, 0.0)
    plain = StickinessModel(l2=5.0).fit(near, y, items, n_items)
    model = StickinessModel(l2=5.0, taste_distance=True).fit(
        near, y, items, n_items, item_latents=item_latents
    )
    # The closed form with the extra column is still the per-item regularised solve.
    features = np.concatenate([with_intercept(near), distance[:, None]], axis=1)
    rows = items == 4
    np.testing.assert_allclose(
        model.stickiness_vectors_[4],
        direct_solve(features[rows], y[rows], 5.0, model.prior_vectors_[4]),
        rtol=1e-6,
    )
    far_items = rng.integers(0, n_items, 500)
    far = item_latents[far_items] + 0.9 * rng.normal(size=(500, dim))
    far_distance = ((far - item_latents[far_items]) ** 2).sum(1) / scale
    truth = np.maximum(3.0 - 4.0 * far_distance, 0.0).mean()
    assert plain.predict(far, far_items).mean() > truth + 0.5  # the over-prediction
    assert abs(model.predict(far, far_items).mean() - truth) < 0.5 * abs(
        plain.predict(far, far_items).mean() - truth
    )
    # (B, K) candidates give the same values as one pair at a time.
    pairs = model.predict(far[:4], np.stack([far_items[:4], far_items[4:8]], axis=1))
    np.testing.assert_allclose(pairs[:, 1], model.predict(far[:4], far_items[4:8]))
    with pytest.raises(ValueError, match="taste_distance needs item_latents"):
        StickinessModel(taste_distance=True).fit(near, y, items, n_items)
