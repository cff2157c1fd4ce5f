"""The calibrated world: real figures computed from the real files, the simulated figures
against naive references, the within-day session dynamics, experience-driven returns, and
every calibration target at its tolerance on the real catalog (``encore calibrate``)."""

import numpy as np
import pytest

from rl.decision.policies import ListenProbabilityModel
from rl.simulator import Simulator, SimulatorConfig
from rl.simulator.sessions import SESSION_GAP_S, next_mood, planned_lengths, quit_probability
from rl.simulator.targets import (
    history_figures,
    mssd_figures,
    record_run,
    return_days,
    simulated_figures,
)
from rl.simulator.user import activity_probability, update_engagement
from tests.rl.simulator.worlds import LAYOUT, logging_policy, small_corpus


class LeastLikelyPolicy:
    """Plays the candidate the listen model likes least: a deliberately bad recommender."""

    name = "least-likely"

    def __init__(self, corpus):
        self.model = ListenProbabilityModel(LAYOUT, corpus.latent_scale)

    def action_probabilities(self, obs):
        scores = self.model.logits(obs)
        mask = LAYOUT.split(np.asarray(obs, np.float32))["candidate_mask"] > 0
        worst = np.where(mask, scores, np.inf).argmin(axis=1)
        return np.eye(LAYOUT.k)[worst]


def test_return_days_match_a_naive_count():
    rng = np.random.default_rng(0)
    users, items, days = (
        rng.integers(0, 5, 400),
        rng.integers(0, 12, 400),
        rng.integers(0, 120, 400),
    )
    got = np.sort(return_days(users, items, days, first_day=30, last_day=60))
    expected = []
    for user in range(5):
        for item in range(12):
            mine = set(days[(users == user) & (items == item)].tolist())
            if mine and 30 <= min(mine) <= 60:
                first = min(mine)
                expected.append(sum(first < d <= first + 59 for d in mine))
    np.testing.assert_array_equal(got, np.sort(expected))


def test_real_figures_are_the_shared_data_readme_figures():
    history = history_figures()
    assert history["plays_per_active_day"] == pytest.approx(19.5, abs=0.05)
    assert history["session_mean"] == pytest.approx(9.8, abs=0.05)
    assert history["session_median"] == 8
    assert history["active_day_share"] == pytest.approx(259 / 337, abs=1e-9)
    assert history["discoveries"] == 386
    assert history["return_days_mean"] == pytest.approx(1.76, abs=0.005)
    assert history["return_share"] == pytest.approx(0.49, abs=0.005)
    mssd = mssd_figures()
    assert mssd["skip_after_skip"] == pytest.approx(0.72, abs=0.005)
    assert mssd["skip_after_play"] == pytest.approx(0.30, abs=0.005)
    assert mssd["session_length_mean"] == pytest.approx(16.2, abs=0.05)


def test_mood_quits_and_planned_lengths():
    config = SimulatorConfig()
    mood = np.array([0.0, 1.0, -1.0], np.float32)
    skipped = np.array([True, False, True])
    expected = [
        config.mood_persistence * m + config.mood_feedback * (-1 if s else 1)
        for m, s in zip(mood, skipped, strict=True)
    ]
    np.testing.assert_allclose(next_mood(mood, skipped, config), expected, rtol=1e-6)
    quits = quit_probability(np.arange(6), config)
    assert np.all(np.diff(quits) > 0)  # a longer run of skips, more likely to quit
    lengths = planned_lengths(config, 200_000, np.random.default_rng(1))
    assert lengths.min() >= 1 and lengths.max() <= config.max_session_length
    assert lengths.mean() == pytest.approx(config.session_length_mean, rel=0.02)


def test_engagement_update_and_activity_probability():
    engagement = np.array([0.0, 0.5], np.float32)
    np.testing.assert_allclose(
        update_engagement(engagement, np.array([1.0, -1.0]), 0.3), [0.3, 0.05], rtol=1e-6
    )
    corpus = small_corpus(1200)
    simulator = Simulator(corpus, 4, logging_policy(corpus), LAYOUT, seed=0)
    state, config = simulator.state, simulator.config
    state.activity[:] = 0.2
    state.engagement[:] = [0.0, 1.0, -1.0, 0.0]
    p = activity_probability(state, config, weekend=False)
    assert p[0] == pytest.approx(0.2, rel=1e-5) and p[1] > 0.2 > p[2]
    assert activity_probability(state, config, weekend=True)[0] == pytest.approx(
        0.2 * config.weekend_activity, rel=1e-5
    )


def test_sessions_within_a_day_are_separated_and_logged_apart():
    corpus = small_corpus(1200)
    simulator = Simulator(corpus, 1500, logging_policy(corpus), LAYOUT, seed=3)
    simulator.run(2)
    data = simulator.run_day().concatenated()
    table = simulator.run_day().to_table(3, simulator._user_ids, simulator._track_ids,
                                         simulator._arm_names_arrow, simulator._policy_versions_arrow)  # fmt: skip
    assert (data["session"] > 0).any()  # several sessions a day for some users
    order = np.lexsort((data["position"], data["session"], data["user"]))
    user, session, position, clock = (
        data[n][order] for n in ("user", "session", "position", "timestamp")
    )
    same_user = user[1:] == user[:-1]
    new_session = same_user & (session[1:] != session[:-1])
    assert np.all(clock[1:][new_session] - clock[:-1][new_session] > SESSION_GAP_S)
    within = same_user & ~new_session
    assert np.all(position[1:][within] == position[:-1][within] + 1)
    assert np.all((clock[1:][within] - clock[:-1][within]) < SESSION_GAP_S)
    frame = table.to_pandas()
    assert frame["session_id"].str.match(r"^u\d{7}-d0003-s\d+$").all()
    per_session = frame.groupby("session_id")["position"].agg(["min", "max", "count"])
    assert (per_session["min"] == 0).all() and (
        per_session["max"] + 1 == per_session["count"]
    ).all()


def test_activity_is_heavy_tailed():
    corpus = small_corpus(1200)
    simulator = Simulator(corpus, 20_000, logging_policy(corpus), LAYOUT, seed=4)
    activity = simulator.state.activity
    assert (activity < 0.1).mean() > 0.15  # a few sessions a month
    assert (activity > 0.8).mean() > 0.08  # (nearly) daily listeners


def test_recommendations_move_active_days_through_experience():
    """Same users, same seed: a recommender that plays what users dislike makes them come
    back less, and more of them churn; with engagement_weight = 0 it does not move
    activity (the effect is the experience channel, nothing else)."""
    corpus = small_corpus(1200)
    results = {}
    for weight in (1.0, 0.0):
        config = SimulatorConfig(engagement_weight=weight, churn_engagement_weight=weight)
        for name, policy in (("good", logging_policy(corpus)), ("bad", LeastLikelyPolicy(corpus))):
            simulator = Simulator(corpus, 1500, policy, LAYOUT, config=config, seed=5)
            simulator.run(20)
            results[weight, name] = simulator.summary.active_user_days
    assert results[1.0, "bad"] < 0.93 * results[1.0, "good"]
    assert abs(results[0.0, "bad"] / results[0.0, "good"] - 1) < 0.05


def test_simulated_figures_match_a_naive_computation():
    corpus = small_corpus(1200)
    simulator = Simulator(corpus, 300, logging_policy(corpus), LAYOUT, seed=6)
    recorder = record_run(simulator, 12)
    figures = simulated_figures(recorder, 300, 12, simulator.state.alive, 0.77)
    d, o = recorder.columns("decisions"), recorder.columns("organic")
    # Naive: per user, rows sorted by time, a new session after a gap of over 30 min.
    lengths, after_skip, after_play = [], [], []
    for user in np.unique(d["user"]):
        rows = np.flatnonzero(d["user"] == user)
        rows = rows[np.argsort(d["timestamp"][rows], kind="stable")]
        length = 1
        for a, b in zip(rows[:-1], rows[1:], strict=True):
            if d["timestamp"][b] - d["timestamp"][a] > SESSION_GAP_S:
                lengths.append(length)
                length = 1
                continue
            length += 1
            (after_skip if d["skip_level"][a] <= 1 else after_play).append(d["skip_level"][b] <= 1)
        lengths.append(length)
    assert figures["session_mean"] == pytest.approx(np.mean(lengths))
    assert figures["session_median"] == pytest.approx(np.median(lengths))
    assert figures["skip_after_skip"] == pytest.approx(np.mean(after_skip))
    assert figures["skip_after_play"] == pytest.approx(np.mean(after_play))
    active = {(u, day) for u, day in zip(d["user"], d["day"], strict=True)} | {
        (u, day) for u, day in zip(o["user"], o["day"], strict=True)
    }
    plays = len(d["user"]) + o["streams"].sum()
    assert figures["plays_per_active_day"] == pytest.approx(plays / len(active))


def test_every_calibration_target_within_tolerance(tmp_path, capsys):
    """``encore calibrate`` on the real catalog (default world, logging policy): every row
    with a real reference within its tolerance, on a population and seed the fit never saw."""
    from rl import storage
    from rl.cli import main

    code = main(
        ["calibrate", "--users", "1500", "--days", "100", "--seed", "3", "--out", str(tmp_path)]
    )
    printed = capsys.readouterr().out
    result = storage.read_json(storage.join(str(tmp_path), "calibration.json"))
    failed = [row for row in result["rows"] if row["ok"] is False]
    assert not failed, printed
    assert code == 0
    checked = [row for row in result["rows"] if row["ok"] is True]
    assert len(checked) >= 13
    assert result["figures"]["lookalike_users"] >= 100  # enough look-alikes to compare
