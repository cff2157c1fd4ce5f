"""Relationship states: batch closed form and incremental store vs a naive daily loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rl.decision.relationship_state import update_relationship_state
from rl.longterm.relationship_history import (
    RelationshipStateStore,
    listen_days_from_frame,
    states_from_listen_days,
)

BETAS = (0.5, 0.9, 0.97, 0.99)


def random_listens(seed: int, n_users=6, n_items=9, n_days=25, density=0.15) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    listened = rng.random((n_days, n_users, n_items)) < density
    day, user, item = np.nonzero(listened)
    frame = pd.DataFrame(
        {"user_id": [f"u{u}" for u in user], "track_id": [f"t{i}" for i in item], "day": day}
    )
    # Repeat some rows (several streams a day) and add minutes: must not change states.
    frame = pd.concat([frame, frame.sample(frac=0.3, random_state=seed)], ignore_index=True)
    frame["minutes"] = rng.random(len(frame)) * 4
    return frame


def naive_dense_states(frame: pd.DataFrame, users, items, as_of_day: int) -> np.ndarray:
    """(U, I, R): apply update_relationship_state for every day 0..as_of_day-1 to every pair."""
    state = np.zeros((len(users), len(items), len(BETAS)), np.float32)
    for day in range(as_of_day):
        listened = np.zeros((len(users), len(items)), bool)
        rows = frame[frame["day"] == day]
        for u, t in zip(rows["user_id"], rows["track_id"], strict=False):
            listened[users.index(u), items.index(t)] = True
        state = update_relationship_state(state, listened, np.asarray(BETAS))
    return state


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("as_of_day", [1, 13, 25, 31])
def test_batch_states_match_naive_loop(seed: int, as_of_day: int) -> None:
    frame = random_listens(seed)
    listen_days = listen_days_from_frame(frame)
    users, items = list(listen_days.user_ids), list(listen_days.track_ids)
    reference = naive_dense_states(frame, users, items, as_of_day)
    user, item, state = states_from_listen_days(listen_days, as_of_day, BETAS)
    dense = np.zeros_like(reference)
    dense[user, item] = state
    np.testing.assert_allclose(dense, reference, atol=1e-6)
    # Sparse: exactly the pairs with a listen before as_of_day are stored, none at zero.
    assert len(user) == int((reference.max(axis=-1) > 0).sum())


def test_incremental_store_matches_batch_and_naive() -> None:
    frame = random_listens(7)
    listen_days = listen_days_from_frame(frame)
    store = RelationshipStateStore(BETAS)
    for day in range(25):
        rows = frame[frame["day"] == day]
        store.update_day(day, rows["user_id"].to_numpy(), rows["track_id"].to_numpy())
    batch = RelationshipStateStore.from_listen_days(listen_days, as_of_day=25, betas=BETAS)
    users, items = list(listen_days.user_ids), list(listen_days.track_ids)
    reference = naive_dense_states(frame, users, items, 30)
    query_users = np.repeat(users, len(items))
    query_items = np.tile(items, len(users))
    for source in (store, batch):
        got = source.states(query_users, query_items, day=30).reshape(reference.shape)
        np.testing.assert_allclose(got, reference, atol=1e-6)
    left = store.to_frame().drop(columns=[]).reset_index(drop=True)
    right = batch.to_frame().reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_exact=False, atol=1e-6)
    # Bookkeeping: first/last listen days and counts agree with the listen days.
    per_pair = frame.drop_duplicates(["user_id", "track_id", "day"]).groupby(
        ["user_id", "track_id"]
    )["day"]
    expected = per_pair.agg(["min", "max", "count"]).reset_index()
    merged = right.merge(expected, on=["user_id", "track_id"])
    assert len(merged) == len(right) == len(expected)
    assert (merged["first_listen_day"] == merged["min"]).all()
    assert (merged["last_listen_day"] == merged["max"]).all()
    assert (merged["n_listen_days"] == merged["count"]).all()


def test_store_roundtrip_and_unknown_pairs(tmp_path) -> None:
    frame = random_listens(3)
    store = RelationshipStateStore.from_listen_days(listen_days_from_frame(frame), betas=BETAS)
    uri = str(tmp_path / "states.parquet")
    store.save(uri)
    loaded = RelationshipStateStore.load(uri)
    pd.testing.assert_frame_equal(store.to_frame(), loaded.to_frame())
    # Continue incrementally after loading.
    loaded.update_day(30, np.array(["u0", "new-user"]), np.array(["t0", "t0"]))
    got = loaded.states(np.array(["new-user", "nobody"]), np.array(["t0", "t0"]), day=31)
    np.testing.assert_allclose(got[0], 1 - np.asarray(BETAS), rtol=1e-6)
    np.testing.assert_array_equal(got[1], 0.0)
    with pytest.raises(ValueError, match="days must increase"):
        loaded.update_day(30, np.array(["u0"]), np.array(["t1"]))


def test_listen_days_aggregates_minutes_and_flags() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b"],
            "track_id": ["x", "x", "y", "x"],
            "day": [3, 3, 3, 1],
            "minutes": [1.0, 2.0, 0.5, 4.0],
            "organic": [True, False, False, False],
        }
    )
    days = listen_days_from_frame(frame, track_ids=np.array(["x", "y", "z"]))
    assert len(days) == 3 and days.n_items == 3
    row = np.flatnonzero((days.user_ids[days.user] == "a") & (days.track_ids[days.item] == "x"))[0]
    assert days.minutes[row] == pytest.approx(3.0)
    assert days.organic[row] and days.recommended[row]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        listen_days_from_frame(frame, track_ids=np.array(["x"]))


@pytest.mark.ray
def test_ray_data_log_reduction_matches_in_process(tmp_path, ray_local) -> None:
    from rl.decision.observation import ObservationLayout
    from rl.decision.policies import UniformRandomPolicy
    from rl.feedback.log import FeedbackLogWriter
    from rl.longterm.listen_days import listen_days_from_log
    from rl.simulator import Simulator, SimulatorConfig, build_corpus

    rng = np.random.default_rng(0)
    latents = rng.normal(size=(120, 5)).astype(np.float32)
    ids = np.array([f"s{i}" for i in range(120)])
    layout = ObservationLayout()
    corpus = build_corpus(latents, ids, layout.k, SimulatorConfig(), rng)
    simulator = Simulator(corpus, 60, UniformRandomPolicy(layout), layout, seed=1)
    log_uri = str(tmp_path / "log")
    with FeedbackLogWriter(log_uri) as writer:
        simulator.run(12, writer)
    minutes = dict(zip(corpus.track_ids, corpus.durations_s / 60.0, strict=True))
    with_ray = listen_days_from_log(log_uri, track_ids=ids, track_minutes=minutes, engine="ray")
    in_process = listen_days_from_log(
        log_uri, track_ids=ids, track_minutes=minutes, engine="pyarrow"
    )
    assert len(with_ray) > 50
    for name in ("user_ids", "user", "item", "day", "organic", "recommended"):
        np.testing.assert_array_equal(getattr(with_ray, name), getattr(in_process, name))
    np.testing.assert_allclose(with_ray.minutes, in_process.minutes, rtol=1e-6)
    # Every listened decision and organic row is one (user, track, day) listen day.
    from rl.feedback.log import read_decisions_table, read_organic_table

    decisions = read_decisions_table(log_uri).to_pandas()
    organic = read_organic_table(log_uri).to_pandas()
    expected = pd.concat(
        [
            decisions.loc[decisions["listened"], ["user_id", "chosen_track_id", "day"]].rename(
                columns={"chosen_track_id": "track_id"}
            ),
            organic[["user_id", "track_id", "day"]],
        ]
    ).drop_duplicates()
    assert len(expected) == len(with_ray)
