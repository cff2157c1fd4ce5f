"""Simulator invariants: kNN table and candidates against naive references, propensities,
reproducibility, churn, the lazy relationship state against the eager update, stickiness
vs clickiness, the one-off recommendation hook, and the MSSD calibration bound."""

import numpy as np
import pytest

from rl.decision.policies import UniformRandomPolicy
from rl.decision.relationship_state import update_relationship_state
from rl.feedback.importers.mssd import mssd_skip_shares
from rl.simulator import Simulator, SimulatorConfig
from rl.simulator.calibration import calibrate_skip_thresholds, skip_shares_of_run
from rl.simulator.recommender import retrieve_candidates
from rl.simulator.user import (
    end_of_day,
    initial_state,
    library_slots,
    record_streams,
    relationship_of,
)
from rl.songs.retrieval import brute_force_topk
from tests.rl.simulator.worlds import LAYOUT, logging_policy, small_corpus


def library_minutes_of(state, users, items):
    """Minutes booked in the users' libraries for the songs (0 where not in the library)."""
    slots = library_slots(state, users, items[:, None])[:, 0]
    return np.where(slots >= 0, state.library_minutes[users, np.maximum(slots, 0)], 0.0)


@pytest.fixture(scope="module")
def corpus():
    return small_corpus()


def test_neighbour_table_matches_brute_force(corpus):
    rows, _ = brute_force_topk(corpus.latents, corpus.latents, corpus.neighbours.shape[1] + 1)
    np.testing.assert_array_equal(corpus.neighbours, rows[:, 1:])  # nearest first, self excluded


def test_retrieve_candidates_matches_naive_loop(corpus):
    rng = np.random.default_rng(1)
    current = rng.integers(0, len(corpus), 300)
    history = np.where(
        rng.random((300, 8)) < 0.5, corpus.neighbours[current][:, rng.integers(0, 12, 8)], -1
    )
    candidates = retrieve_candidates(corpus.neighbours, current, history, 4)
    for b in range(300):
        expected = [s for s in corpus.neighbours[current[b]] if s not in set(history[b])][:4]
        expected += [-1] * (4 - len(expected))
        assert candidates[b].tolist() == expected


def test_stickiness_is_not_clickiness(corpus):
    correlation = np.corrcoef(corpus.clickiness, corpus.stickiness)[0, 1]
    assert abs(correlation) < 0.5


def test_lazy_relationship_state_matches_eager_reference(corpus):
    config = SimulatorConfig()
    rng = np.random.default_rng(2)
    betas = np.asarray(LAYOUT.betas, np.float32)
    state = initial_state(20, corpus, config, LAYOUT.betas, rng)
    users = np.arange(20)
    songs = np.stack([rng.choice(len(corpus), 3, replace=False) for _ in range(20)])
    eager = np.zeros((20, 3, 4), np.float32)
    for day in range(40):
        assert np.allclose(relationship_of(state, users, songs, day, betas), eager, atol=1e-6)
        streamed = rng.random((20, 3)) < 0.3
        for j in range(3):  # one stream per user per call
            record_streams(
                state,
                corpus,
                users,
                songs[:, j],
                streamed[:, j],
                np.ones(20, np.float32),
                day,
                betas,
            )
        # Reference: every known (user, song) updated every day with 1{streamed today}.
        known = relationship_of(state, users, songs, day, betas).any(-1) | streamed | eager.any(-1)
        eager = np.where(known[..., None], update_relationship_state(eager, streamed, betas), 0.0)
        end_of_day(state, config.replace(churn_rate=0.0), betas, day, rng)
    assert np.allclose(relationship_of(state, users, songs, 40, betas), eager, atol=1e-6)
    assert eager.max() > 0.3


def test_logged_propensities_sum_to_one_and_match_policy(corpus):
    policy = logging_policy(corpus)
    simulator = Simulator(corpus, 400, policy, LAYOUT, seed=3)
    buffer = simulator.run_day()
    simulator.run(2)
    data = buffer.concatenated()
    assert len(data["user"]) > 50
    # Rebuild the observations the policy saw and check the logged propensity.
    from rl.simulator.recommender import observations_from_corpus

    obs = observations_from_corpus(
        LAYOUT, corpus, data["current"], data["taste"], data["hour"], data["weekday"][0],
        data["candidates"], data["relationship"],
    )  # fmt: skip
    probabilities = policy.action_probabilities(obs)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(probabilities[data["candidates"] < 0] == 0)
    picked = probabilities[np.arange(len(obs)), data["action"]]
    np.testing.assert_allclose(np.exp(data["logp"]), picked, rtol=1e-5)
    np.testing.assert_array_equal(
        data["chosen"], data["candidates"][np.arange(len(obs)), data["action"]]
    )


def test_reproducible_with_seed(corpus):
    tables = []
    for seed in (11, 11, 12):
        simulator = Simulator(corpus, 300, logging_policy(corpus), LAYOUT, seed=seed)
        simulator.run(3)
        buffer = simulator.run_day()
        tables.append(
            buffer.to_table(
                3,
                simulator._user_ids,
                simulator._track_ids,
                simulator._arm_names_arrow,
                simulator._policy_versions_arrow,
            )
        )
    assert tables[0].equals(tables[1])
    assert not tables[0].equals(tables[2])


def test_churned_users_stop(corpus):
    config = SimulatorConfig(churn_rate=0.1, activity_alpha=5.0, activity_beta=2.0)
    simulator = Simulator(corpus, 500, logging_policy(corpus), LAYOUT, config=config, seed=4)
    last_decision_day = np.full(500, -1)
    for day in range(20):
        buffer = simulator.run_day()
        if len(buffer):
            last_decision_day[np.unique(buffer.concatenated()["user"])] = day
    churned = ~simulator.state.alive
    assert churned.sum() > 300  # 1 - 0.9**20 = 88 % expected
    churn_day = simulator.state.churn_day[churned]
    assert np.all(last_decision_day[churned] <= churn_day)
    assert simulator.summary.churned_users == churned.sum()


def test_several_arms_serve_their_own_users(corpus):
    arms = ["control"] * 150 + ["treatment"] * 150
    policies = {"control": logging_policy(corpus), "treatment": UniformRandomPolicy(LAYOUT)}
    simulator = Simulator(corpus, 300, policies, LAYOUT, user_arms=arms, seed=5)
    buffer = simulator.run_day()
    table = buffer.to_table(
        0,
        simulator._user_ids,
        simulator._track_ids,
        simulator._arm_names_arrow,
        simulator._policy_versions_arrow,
    )
    frame = table.select(["user_id", "arm", "policy_version", "behaviour_logp"]).to_pandas()
    user = frame["user_id"].str[1:].astype(int)
    assert set(frame.loc[user < 150, "arm"]) == {"control"}
    assert set(frame.loc[user >= 150, "policy_version"]) == {"uniform-random"}


def test_recommend_once_follows_outcomes_and_stickiness_drives_returns():
    # Short, single sessions keep the 62 days cheap; returns come from stickiness anyway.
    config = SimulatorConfig(
        churn_rate=0.0, stickiness_std=1.5, session_length_mean=4.0, sessions_per_activity=0.0
    )
    corpus = small_corpus(config=config)
    simulator = Simulator(corpus, 4000, logging_policy(corpus), LAYOUT, config=config, seed=6)
    simulator.run(2)
    order = np.argsort(corpus.stickiness)
    sticky, fleeting = order[-50:], order[:50]
    users = np.arange(4000)
    items = np.where(users % 2 == 0, sticky[users % 50], fleeting[users % 50])
    followed = simulator.recommend_once(users, items, window=60).followed
    simulator.run(60)
    outcomes = simulator.followed_outcomes(followed)
    assert (outcomes["days_observed"] == 60).all()
    streamed = outcomes[outcomes["listened"]]
    assert len(streamed) > 500
    assert (streamed["active_days"] >= 1).all()
    assert ((outcomes["minutes"] > 0) == (outcomes["active_days"] > 0)).all()
    is_sticky = streamed["user"] % 2 == 0
    assert (
        streamed.loc[is_sticky, "return_days"].mean()
        > 2 * streamed.loc[~is_sticky, "return_days"].mean()
    )
    # The ground-truth stream probability is a calibrated predictor of the stream.
    assert abs(outcomes["stream_probability"].mean() - outcomes["listened"].mean()) < 0.05
    assert not simulator.state.library_pinned.any()  # pins released when the window closed


def test_recommend_once_returns_the_response_and_logs_impressions(corpus, tmp_path):
    from rl.feedback.log import FeedbackLogWriter, read_decisions_table
    from rl.feedback.reward import compute_reward

    silent, logged = (Simulator(corpus, 600, logging_policy(corpus), LAYOUT, seed=4) for _ in "ab")
    for simulator in (silent, logged):
        simulator.run(3)
        simulator.state.alive[:20] = False  # churned users respond to nothing
    users = np.arange(0, 600, 2)
    # Half the songs already streamed by the user (known), half most likely new.
    known_items = np.maximum(logged.state.library_item[users, 0], 0)
    items = np.where(users % 4 == 0, known_items, np.arange(len(users)) % len(corpus))
    arms = np.where(users % 3 == 0, "banner:control", "banner:personalised")
    known_before = library_slots(logged.state, users, items[:, None])[:, 0] >= 0
    minutes_before = library_minutes_of(logged.state, users, items)

    quiet = silent.recommend_once(users, items, window=10)
    with FeedbackLogWriter(str(tmp_path / "log"), k=LAYOUT.k, n_betas=4) as writer:
        result = logged.recommend_once(users, items, window=10, writer=writer, arm=arms, hour=9)
        again = logged.recommend_once(
            users[-10:], (items[-10:] + 1) % len(corpus), writer=writer, arm="x"
        )

    # The returned minutes are the minutes booked into the library (naive reference).
    booked = library_minutes_of(logged.state, users, items) - minutes_before
    np.testing.assert_allclose(
        result.stream_minutes, np.where(result.listened, booked, 0.0), rtol=1e-5, atol=1e-4
    )
    assert ((result.stream_minutes > 0) == result.listened).all() and result.listened.sum() > 20
    np.testing.assert_array_equal(result.first_stream, result.listened & ~known_before)
    churned = users < 20
    assert (result.skip_level[churned] == -1).all() and not result.listened[churned].any()
    assert (result.reward[churned] == 0).all() and not result.liked[churned].any()
    live = result.skip_level >= 0  # also users who churned during the 3 days
    assert live.sum() > 200 and not live[churned].any()
    expected_reward = compute_reward(
        result.listen_fraction[live], result.liked[live], result.skip_level[live]
    )
    np.testing.assert_allclose(result.reward[live], expected_reward)
    # Logging draws no random numbers: the silent twin got the same responses.
    for name in ("stream_minutes", "listen_fraction", "liked", "reward", "skip_level"):
        np.testing.assert_array_equal(getattr(quiet, name), getattr(result, name))

    log = read_decisions_table(str(tmp_path / "log")).to_pandas()
    assert writer.quarantined_rows == 0
    first = log[log["session_id"].str.endswith("-once0")].sort_values("user_id")
    assert len(first) == live.sum() and len(log) == len(first) + (again.skip_level >= 0).sum()
    assert (first["user_id"].to_numpy() == logged.user_ids(users[live])).all()
    assert (first["arm"].to_numpy() == arms[live]).all()
    assert (first["chosen_track_id"].to_numpy() == corpus.track_ids[items[live]]).all()
    assert (first["listened"].to_numpy() == result.listened[live]).all()
    np.testing.assert_allclose(first["reward"], result.reward[live])
    assert (first["hour"] == 9).all() and (first["behaviour_logp"] == 0).all()
    assert (first["day"] == 3).all() and (first["position"] == 0).all()
    second = log[log["session_id"].str.endswith("-once1")]
    assert set(second["arm"]) == {"x"} and len(second) > 0


def test_calibrated_skip_shares_within_5_points_of_mssd():
    real = mssd_skip_shares()
    corpus = small_corpus(n_songs=1500, seed=7)
    policy = logging_policy(corpus)
    short_sessions = SimulatorConfig(session_length_mean=5.0, sessions_per_activity=0.5)
    calibration = calibrate_skip_thresholds(
        corpus, policy, LAYOUT, real, short_sessions, n_users=1500, days=10, iterations=5, seed=8
    )
    # Validation on a fresh population, another seed, 30 days (familiarity builds up).
    simulated = skip_shares_of_run(
        corpus, policy, LAYOUT, calibration.config, n_users=2000, days=30, seed=9
    )
    for name, share in real.items():
        assert abs(simulated[name] - share) < 0.05, (name, simulated, real)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="churn_rate must be in \\[0, 1\\), got 1.5"):
        SimulatorConfig(churn_rate=1.5)
    with pytest.raises(ValueError, match="skip_thresholds must be 3 increasing values"):
        SimulatorConfig(skip_thresholds=(1.0, 0.0, 2.0))
    with pytest.raises(ValueError, match="library_size must be >= 1, got 0"):
        SimulatorConfig(library_size=0)
    config = SimulatorConfig(churn_rate=0.01)
    assert SimulatorConfig.from_dict(config.to_dict()) == config


@pytest.fixture(scope="module")
def tiny_embedding_uri(tmp_path_factory):
    """A 1-epoch VAE on the real catalog, saved like the project's default embedding."""
    from rl.songs.catalog import load_catalog
    from rl.songs.embedding import VAEConfig, train_song_embedding

    uri = str(tmp_path_factory.mktemp("embedding"))
    train_song_embedding(load_catalog(), VAEConfig(epochs=1), progress=False).save(uri)
    return uri


def test_cli_simulate_and_propagate_smoke(tmp_path, tiny_embedding_uri, capsys):
    from rl import storage
    from rl.cli import main
    from rl.feedback.log import read_decisions_table, read_organic_table

    out = str(tmp_path / "log")
    code = main(
        [
            "simulate",
            "--users",
            "300",
            "--days",
            "3",
            "--out",
            out,
            "--seed",
            "1",
            "--embedding",
            tiny_embedding_uri,
        ]
    )
    assert code == 0
    summary = storage.read_json(storage.join(out, "summary.json"))
    assert summary["users"] == 300 and summary["days"] == 3
    assert summary["decisions"] == read_decisions_table(out).num_rows > 0
    assert summary["log"]["quarantined_rows"] == 0
    assert read_organic_table(out).num_rows == summary["log"]["written_organic_rows"]
    assert abs(sum(summary["skip_shares"].values()) - 1.0) < 1e-9
    code = main(
        [
            "propagate-rewards",
            "--log",
            out,
            "--embedding",
            tiny_embedding_uri,
            "--clusters",
            "10",
            "--min-plays",
            "2",
        ]
    )
    assert code == 0
    assert "global-mean baseline MAE" in capsys.readouterr().out
