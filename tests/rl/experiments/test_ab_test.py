"""Simulated A/B test on a tiny population: runs end to end, reproducible with a seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rl.experiments import ab_metrics
from rl.experiments.ab_test import ABTestConfig, run_ab_test
from rl.experiments.data_efficiency import outcomes_from_banner, sample_size_study
from rl.experiments.reports import write_ab_report, write_data_efficiency_report
from rl.longterm.fitted_models import ModelConfig


def tiny_config(seed: int = 3) -> ABTestConfig:
    return ABTestConfig(
        n_users=400, history_days=30, window_days=14, n_markets=2, pool_size=12, shelf_weeks=8,
        shelf_candidates=12, bootstrap=50, seed=seed, log_engine="pyarrow",
        models=ModelConfig(horizon_days=14, clickiness_epochs=1, clickiness_hidden_units=8),
    )  # fmt: skip


def songs(n: int = 300):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 5)).astype(np.float32), np.array([f"s{i:04d}" for i in range(n)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    latents, ids = songs()
    first = run_ab_test(latents, ids, tiny_config(), work_uri=str(tmp_path_factory.mktemp("a")))
    second = run_ab_test(latents, ids, tiny_config(), work_uri=str(tmp_path_factory.mktemp("b")))
    return first, second


def test_reproducible_with_seed(runs) -> None:
    first, second = runs
    pd.testing.assert_frame_equal(first["banner"], second["banner"])
    pd.testing.assert_frame_equal(first["shelf"], second["shelf"])


def test_banner_outcomes_are_consistent(runs) -> None:
    banner = runs[0]["banner"]
    assert set(banner["arm"]) == {"control", "personalised", "unpersonalised", "square-root"}
    assert banner["user"].is_unique and len(banner) > 100
    # The recommended song is the assigned arm's pick, and impacted <=> the arms disagree.
    picked = banner.apply(lambda row: row[f"pick_{row['arm']}"], axis=1)
    assert (picked == banner["track_id"]).all()
    picks = banner[
        [f"pick_{a}" for a in ("control", "personalised", "unpersonalised", "square-root")]
    ]
    assert (banner["impacted"] == (picks.nunique(axis=1) > 1)).all()
    # Active days count the first-stream day; return days are within the window.
    assert (banner.loc[banner["first_stream"], "active_days"] >= 1).all()
    assert (banner["return_days"] <= 13).all() and (banner["return_days"] >= 0).all()
    assert (banner["total_minutes"] + 1e-3 >= banner["minutes"]).all()
    metrics = ab_metrics.banner_metrics(banner, n_resamples=50)
    assert len(metrics) == 4 and (metrics["users"] > 0).all()


def test_shelf_and_reports(runs, tmp_path) -> None:
    result = runs[0]
    shelf = result["shelf"]
    assert set(shelf["arm"]) == {"control", "personalised", "square-root"}
    assert {"week_8_minutes", "discovery_minutes", "lasting_discovery"} <= set(shelf.columns)
    report = write_ab_report(result, str(tmp_path / "ab"), tiny_config(), n_resamples=50, seed=0)
    text = open(report).read()
    assert "Headline" in text and "+81.0%" in text
    for figure in (
        "banner_lifts.png",
        "calibration.png",
        "shelf_weekly.png",
        "banner_minutes_distribution.png",
    ):
        assert (tmp_path / "ab" / figure).stat().st_size > 1000
    rng = np.random.default_rng(0)
    # Half of each arm as the auxiliary discovery set: in the calibrated world only ~1 in 10
    # of this tiny population's control users streams the banner's song, and the estimator
    # needs at least 2 discoveries.
    a = outcomes_from_banner(result["banner"], "control", 0.5, rng)
    b = outcomes_from_banner(result["banner"], "personalised", 0.5, rng)
    study = sample_size_study(a, b, [20, 50], seed=0)
    path = write_data_efficiency_report(
        study, str(tmp_path / "de"), "control", "personalised", {}, 0
    )
    assert "holistic/decomposed" in open(path).read()
    assert (tmp_path / "de" / "data_efficiency.png").exists()


def test_policy_arms_by_name_enter_banner_and_shelf(tmp_path) -> None:
    """Policy arms (here two real DecisionPolicies: the logging policy and a greedy variant
    of it) added by the train_policy_arms hook after the history."""
    from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy, latent_scale_of

    latents, ids = songs()
    seen_worlds = []

    def train_arms(world, work_uri):
        seen_worlds.append((world.simulator.day, work_uri))
        model = ListenProbabilityModel(
            world.layout, latent_scale_of(world.simulator.corpus.latents)
        )
        return {
            "ppo-a": MyopicListenPolicy(model),
            "ppo-b": MyopicListenPolicy(model, temperature=0.05, epsilon=0.0),
        }

    config = tiny_config(seed=4)
    result = run_ab_test(
        latents, ids, config, work_uri=str(tmp_path / "w"), train_policy_arms=train_arms
    )
    assert seen_worlds == [(config.history_days, str(tmp_path / "w"))]
    banner = result["banner"]
    assert set(banner["arm"]) == {
        "control", "personalised", "unpersonalised", "square-root", "ppo-a", "ppo-b"
    }  # fmt: skip
    assert set(result["shelf"]["arm"]) == {
        "control",
        "personalised",
        "square-root",
        "ppo-a",
        "ppo-b",
    }
    # Entropy of a k-candidate distribution: within [0, ln k]; the sharp policy is sharper.
    for arm in ("ppo-a", "ppo-b"):
        assert banner[f"entropy_{arm}"].between(0, np.log(4) + 1e-6).all()
    assert banner["entropy_ppo-b"].mean() < banner["entropy_ppo-a"].mean()
    report = write_ab_report(result, str(tmp_path / "ab"), config, n_resamples=50, seed=0)
    text = open(report).read()
    assert "Policy (PPO actor-critic) arms" in text and "ppo-b" in text
