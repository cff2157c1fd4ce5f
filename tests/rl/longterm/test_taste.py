"""Taste vectors: the cumulative-sum implementation vs a direct weighted mean."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rl.longterm.relationship_history import listen_days_from_frame
from rl.longterm.taste import TasteModel


def naive_taste(frame, latents, user, day, half_life, prior):
    rows = frame[(frame["user_id"] == user) & (frame["day"] < day)].drop_duplicates(
        ["track_id", "day"]
    )
    if rows.empty:
        return prior
    rho = 1.0 if math.isinf(half_life) else 0.5 ** (1 / half_life)
    weights = rho ** (day - 1 - rows["day"].to_numpy())
    vectors = latents[[int(t[1:]) for t in rows["track_id"]]]
    return (weights[:, None] * vectors).sum(0) / weights.sum()


@pytest.mark.parametrize("half_life", [5.0, 60.0, math.inf])
def test_taste_matches_weighted_mean(half_life: float) -> None:
    rng = np.random.default_rng(0)
    n_items, n_users, n_days = 12, 5, 20
    latents = rng.normal(size=(n_items, 3))
    listened = rng.random((n_days, n_users, n_items)) < 0.1
    listened[:, 4, :] = False  # a user who never listens
    listened[0, 4, 0] = False
    day, user, item = np.nonzero(listened)
    frame = pd.DataFrame(
        {"user_id": [f"u{u}" for u in user], "track_id": [f"t{i:02d}" for i in item], "day": day}
    )
    frame = pd.concat([frame, pd.DataFrame({"user_id": ["u4"], "track_id": ["t00"], "day": [19]})])
    track_ids = np.array([f"t{i:02d}" for i in range(n_items)], dtype=object)
    days = listen_days_from_frame(frame, track_ids=track_ids)
    model = TasteModel(half_life_days=half_life).fit(days, latents)
    users = np.repeat(np.arange(days.n_users), n_days + 1)
    query_days = np.tile(np.arange(n_days + 1), days.n_users)
    got = model.transform(users, query_days)
    for index, (u, d) in enumerate(zip(users, query_days, strict=False)):
        expected = naive_taste(frame, latents, days.user_ids[u], d, half_life, model.prior_)
        np.testing.assert_allclose(got[index], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.current(), got.reshape(days.n_users, n_days + 1, 3)[:, -1], atol=1e-6
    )


def test_taste_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="half_life_days must be > 0"):
        TasteModel(half_life_days=0)
    days = listen_days_from_frame(pd.DataFrame({"user_id": ["a"], "track_id": ["x"], "day": [0]}))
    with pytest.raises(ValueError, match="item_latents must be"):
        TasteModel().fit(days, np.zeros((3, 2)))
