"""The long-term reward (rl/longterm/return_reward.py): return days against a naive loop,
censoring, the chosen candidate's logged state, and log -> long-term steps -> RLlib training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rl.longterm.relationship_history import listen_days_from_frame
from rl.longterm.return_reward import (
    LongTermColumn,
    LongTermRewardConfig,
    ReturnDayIndex,
    chosen_relationship,
    long_term_term,
)


def tiny_listens(seed: int = 0, n: int = 400) -> pd.DataFrame:
    """Random listen rows (repeats on a day included), some organic, some recommended."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": rng.choice([f"u{i}" for i in range(6)], n),
            "track_id": rng.choice([f"t{i}" for i in range(5)], n),
            "day": rng.integers(0, 40, n),
            "organic": rng.random(n) < 0.5,
            "recommended": rng.random(n) < 0.7,
        }
    )


def naive_return_days(listens: pd.DataFrame, user, track, day, window, source) -> int:
    rows = listens[(listens.user_id == user) & (listens.track_id == track)]
    if source == "organic":
        rows = rows[rows.organic]
    return len({d for d in rows.day if day < d <= day + window})


@pytest.mark.parametrize("source", ["organic", "any"])
@pytest.mark.parametrize("window", [1, 7, 59])
def test_return_days_match_a_naive_loop(source, window):
    listens = tiny_listens()
    index = ReturnDayIndex(listen_days_from_frame(listens), source)
    rng = np.random.default_rng(1)
    users = rng.choice([f"u{i}" for i in range(7)], 300)  # u6 never listened
    tracks = rng.choice([f"t{i}" for i in range(6)], 300)  # t5 never listened
    days = rng.integers(0, 45, 300)
    counted = index.count(users, tracks, days, window)
    expected = [
        naive_return_days(listens, u, t, d, window, source)
        for u, t, d in zip(users, tracks, days, strict=True)
    ]
    np.testing.assert_array_equal(counted, expected)
    assert counted.dtype == np.int32


def naive_term(return_days, day, listened, state, end_day, config):
    """One decision at a time: (term, kept) by the module docstring's rules."""
    window = config.return_window_days
    observed = min(max(end_day - 1 - day, 0), window)
    if config.censored == "drop" and observed < window:
        return 0.0, False
    count = return_days
    if observed < window:
        count = return_days * window / max(observed, 1)
    credit = listened and (config.credit == "listened" or max(state) <= 0)
    return config.return_weight * credit * count, True


@pytest.mark.parametrize("credit", ["listened", "discovery"])
@pytest.mark.parametrize("censored", ["drop", "scale"])
def test_long_term_term_matches_a_naive_loop(credit, censored):
    rng = np.random.default_rng(2)
    n, end_day = 200, 40
    config = LongTermRewardConfig(
        return_window_days=10, return_weight=2.5, credit=credit, censored=censored
    )
    return_days = rng.integers(0, 6, n)
    days = rng.integers(0, end_day, n)
    listened = rng.random(n) < 0.6
    state = np.where(rng.random((n, 4)) < 0.5, 0.0, rng.random((n, 4))).astype(np.float32)
    term, keep = long_term_term(return_days, days, listened, state, end_day, config)
    for j in range(n):
        expected, kept = naive_term(return_days[j], days[j], listened[j], state[j], end_day, config)
        assert keep[j] == kept
        if kept:
            assert term[j] == pytest.approx(expected, rel=1e-6)
    # Decisions on the last day that still sees the whole window are kept.
    assert keep[days == end_day - 1 - 10].all()
    if censored == "drop":
        assert not keep[days > end_day - 1 - 10].any()


def test_chosen_relationship_picks_the_chosen_candidates_state():
    rng = np.random.default_rng(3)
    n_betas, rows = 4, []
    for _ in range(20):
        k = int(rng.integers(1, 5))
        rows.append((rng.random((k, n_betas)).astype(np.float32), int(rng.integers(0, k))))
    table = pa.table(
        {
            "candidate_relationship": pa.array(
                [s.reshape(-1).tolist() for s, _ in rows], pa.list_(pa.float32())
            ),
            "chosen_index": pa.array([c for _, c in rows], pa.int32()),
        }
    )
    np.testing.assert_array_equal(
        chosen_relationship(table, n_betas), np.stack([s[c] for s, c in rows])
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("return_window_days", 0, "return_window_days must be >= 1, got 0"),
        ("return_weight", -1.0, "return_weight must be finite and >= 0"),
        ("return_source", "radio", "return_source must be one of"),
        ("credit", "all", "credit must be one of"),
        ("censored", "keep", "censored must be one of"),
    ],
)
def test_config_says_what_is_wrong(field, value, message):
    with pytest.raises(ValueError, match=message):
        LongTermRewardConfig(**{field: value})


def test_config_round_trips():
    config = LongTermRewardConfig(return_window_days=29, return_weight=3.0, credit="discovery")
    assert LongTermRewardConfig.from_dict(config.to_dict()) == config


# ---------------------------------------------------------------------------------------
# Log -> long-term steps (Ray Data) -> offline PPO on RLlib
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    from rl.decision.observation import ObservationLayout
    from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy
    from rl.feedback.log import FeedbackLogWriter
    from rl.simulator import Simulator, SimulatorConfig, build_corpus

    layout = ObservationLayout(k=4)
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((300, 5)).astype(np.float32)
    track_ids = [f"s{i:04d}" for i in range(300)]
    # One short session per active day keeps the log (and the naive check below) as small
    # as before the simulator's multi-session days (issue 12).
    config = SimulatorConfig(session_length_mean=4.0, sessions_per_activity=0.0)
    corpus = build_corpus(latents, track_ids, 4, config, rng)
    policy = MyopicListenPolicy(ListenProbabilityModel(layout, corpus.latent_scale))
    simulator = Simulator(corpus, 120, policy, layout, config=config, seed=1)
    log = str(tmp_path_factory.mktemp("log"))
    with FeedbackLogWriter(log, k=4, n_betas=4) as writer:
        simulator.run(16, writer=writer)
    return log, latents, track_ids, layout


@pytest.mark.ray
def test_log_to_long_term_steps_to_rllib_training(simulated, ray_local, tmp_path):
    from rl import storage
    from rl.feedback.log import read_decisions_table
    from rl.feedback.offline_steps import SessionStepBuilder
    from rl.feedback.offline_steps_files import parquet_files, read_logged_decisions
    from rl.longterm.listen_days import listen_days_from_log
    from rl.registry import ModelRegistry, PolicyScorer
    from rl.training.config import TrainConfig
    from rl.training.lifecycle import train_and_register

    log, latents, track_ids, layout = simulated
    from rl.longterm.return_reward import REWARD_FILE, write_long_term_offline_steps

    config = LongTermRewardConfig(return_window_days=5, return_weight=3.0)
    out = str(tmp_path / "steps")
    summary = write_long_term_offline_steps(
        log, out, latents, track_ids, layout, config, num_partitions=2
    )
    decisions = read_decisions_table(log).to_pandas()
    end_day = int(decisions["day"].max()) + 1
    kept = decisions[decisions["day"] + 5 < end_day]
    assert summary.steps == len(kept) and summary.dropped_censored == len(decisions) - len(kept)
    assert storage.read_json(storage.join(out, REWARD_FILE))["config"] == config.to_dict()

    # Every step's reward = the session reward + 3 x organic return days, by a naive loop.
    listens = listen_days_from_log(log, engine="pyarrow")
    organic = pd.DataFrame(
        {
            "user_id": listens.user_ids[listens.user],
            "track_id": listens.track_ids[listens.item],
            "day": listens.day,
            "organic": listens.organic,
        }
    )
    table = pa.Table.from_pandas(kept, preserve_index=False)
    session = SessionStepBuilder(latents, track_ids, layout, config.immediate)(table).to_pandas()
    ordered = kept.sort_values(["session_id", "position"])
    expected = session["rewards"].to_numpy(np.float64) + 3.0 * np.array(
        [
            naive_return_days(organic, u, t, d, 5, "organic") if listened else 0
            for u, t, d, listened in zip(
                ordered["user_id"], ordered["chosen_track_id"], ordered["day"],
                ordered["listened"], strict=True,
            )
        ]
    )  # fmt: skip
    written = pd.read_parquet(out).sort_values(["eps_id", "t"])
    np.testing.assert_allclose(written["rewards"].to_numpy(), expected, rtol=1e-5, atol=1e-5)
    assert (expected > session["rewards"].to_numpy() + 1e-6).any()  # some decisions earn returns

    # The steps train a real offline PPO for 2 iterations and register a loadable policy.
    registry = ModelRegistry(str(tmp_path / "registry"))
    version = train_and_register(
        TrainConfig(
            iterations=2, train_batch_size=128, updates_per_iteration=2, hidden_sizes=(16,)
        ),
        parquet_files(out),
        layout,
        registry,
        work_uri=str(tmp_path / "run"),
    )
    policy = PolicyScorer.from_registry(registry, version.version)
    logged = read_logged_decisions(parquet_files(out), layout)
    probabilities = policy.action_probabilities(logged.obs[:10])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert version.data["rows"] == summary.steps


def test_long_term_column_drops_censored_rows_and_adds_the_term():
    listens = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b"],
            "track_id": ["x", "x", "x", "x"],
            "day": [1, 2, 4, 3],
            "organic": [False, True, True, True],
        }
    )
    index = ReturnDayIndex(listen_days_from_frame(listens), "organic")
    config = LongTermRewardConfig(return_window_days=3, return_weight=2.0)
    table = pa.table(
        {
            "user_id": ["a", "a", "b", "a"],
            "chosen_track_id": ["x", "x", "x", "x"],
            "day": pa.array([1, 1, 0, 5], pa.int32()),
            "listened": [True, False, True, True],
            "chosen_index": pa.array([0, 0, 0, 0], pa.int32()),
            "candidate_relationship": pa.array([[0.0] * 4] * 4, pa.list_(pa.float32())),
        }
    )
    out = LongTermColumn(index, config, end_day=8, n_betas=4)(table)
    # Day 5 + 3 = 8 is not inside a log ending before day 8: dropped.
    assert out["day"].to_pylist() == [1, 1, 0]
    assert out["return_days"].to_pylist() == [2, 2, 1]  # a: days 2, 4; b: day 3
    assert out["long_term_reward"].to_pylist() == [4.0, 0.0, 2.0]
