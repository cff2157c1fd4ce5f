"""The per-song feature table: numerical core against a slow reference, priors for unknown
songs, persistence, and the fit from a real simulated log (pyarrow engine, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from rl.longterm.song_table import (
    FEATURE_NAMES,
    SongFeatureTable,
    SongTableConfig,
    fit_song_table_arrays,
)


def naive_table(
    impression_ids, impressions, listens, discovery_ids, taste, returns, config, horizon
):
    """Per song, one loop each: the shrunken rate, S_i and the ridge toward the pooled fit."""
    songs = sorted(set(map(str, impression_ids)) | set(map(str, discovery_ids)))
    shown = {s: 0 for s in songs}
    hits = {s: 0 for s in songs}
    for song, n, h in zip(impression_ids, impressions, listens, strict=True):
        shown[str(song)] += int(n)
        hits[str(song)] += int(h)
    overall = sum(hits.values()) / sum(shown.values())
    kappa = config.clickiness_shrinkage

    def logit(p):
        return np.log(p / (1 - p))

    u = np.concatenate([np.ones((len(returns), 1)), np.asarray(taste, float)], axis=1)
    pooled = np.linalg.solve(u.T @ u + 1e-3 * np.eye(u.shape[1]), u.T @ returns)
    mean = float(np.mean(returns))
    expected = {}
    for song in songs:
        rate = (hits[song] + kappa * overall) / (shown[song] + kappa)
        rows = [i for i, d in enumerate(discovery_ids) if str(d) == song]
        x, y = u[rows], np.asarray(returns, float)[rows]
        lam = config.stickiness_l2
        vector = np.linalg.solve(x.T @ x + lam * np.eye(u.shape[1]), x.T @ y + lam * pooled)
        sticky = (y.sum() + config.mean_shrinkage * mean) / (len(rows) + config.mean_shrinkage)
        expected[song] = (logit(rate) - logit(overall), sticky, vector, np.log1p(hits[song]))
    return expected, pooled, mean


@pytest.fixture()
def synthetic_inputs():
    rng = np.random.default_rng(3)
    songs = np.array([f"s{i}" for i in range(30)])
    shown_songs = songs[:25]
    impressions = rng.integers(1, 80, len(shown_songs))
    listens = rng.binomial(impressions, rng.uniform(0.2, 0.8, len(shown_songs)))
    n = 400
    discovery_ids = songs[rng.integers(5, 30, n)]  # some songs only discovered, never shown
    taste = rng.normal(size=(n, 3))
    returns = rng.poisson(2.0, n).astype(float)
    return shown_songs, impressions, listens, discovery_ids, taste, returns


def test_table_matches_the_naive_reference(synthetic_inputs) -> None:
    config = SongTableConfig(clickiness_shrinkage=10.0, stickiness_l2=5.0, mean_shrinkage=7.0)
    table = fit_song_table_arrays(*synthetic_inputs, horizon_days=30, config=config)
    expected, pooled, mean = naive_table(*synthetic_inputs, config, 30)
    assert len(table) == len(expected)
    for song, (click, sticky, vector, popularity) in expected.items():
        row = table.rows_of(np.array([song]))[0]
        assert table.clickiness_logit[row] == pytest.approx(click, abs=1e-5)
        assert table.stickiness[row] == pytest.approx(sticky, rel=1e-5)
        np.testing.assert_allclose(table.stickiness_vectors[row], vector, rtol=1e-4, atol=1e-5)
        assert table.popularity[row] == pytest.approx(popularity, rel=1e-6)
    np.testing.assert_allclose(table.prior_vector, pooled, rtol=1e-4, atol=1e-6)
    assert table.prior_stickiness == pytest.approx(mean)


def test_features_of_known_and_unknown_songs(synthetic_inputs) -> None:
    table = fit_song_table_arrays(*synthetic_inputs, horizon_days=30, config=SongTableConfig())
    taste = np.array([[0.5, -1.0, 0.2], [0.0, 0.0, 0.0]])
    ids = np.array([["s7", "new-song"], ["s29", ""]])
    features = table.candidate_features_by_id(ids, taste)
    assert features.shape == (2, 2, len(FEATURE_NAMES))
    row = table.rows_of(np.array(["s7"]))[0]
    u = np.array([1.0, 0.5, -1.0, 0.2])
    personal = np.clip(u @ table.stickiness_vectors[row], 0, 29)
    np.testing.assert_allclose(
        features[0, 0],
        [table.clickiness_logit[row], table.stickiness[row], personal, table.popularity[row]],
        rtol=1e-5,
    )
    # A song the table never saw: the priors (cold start), never an error or a NaN.
    prior_personal = np.clip(u @ table.prior_vector, 0, 29)
    np.testing.assert_allclose(
        features[0, 1], [0.0, table.prior_stickiness, prior_personal, 0.0], rtol=1e-5
    )
    assert np.isfinite(features).all()


def test_aligned_order_and_persistence(synthetic_inputs, tmp_path) -> None:
    table = fit_song_table_arrays(*synthetic_inputs, horizon_days=30, config=SongTableConfig())
    catalog = np.array(["s3", "brand-new", "s12"])
    aligned = table.aligned(catalog)
    taste = np.zeros((1, 3))
    np.testing.assert_allclose(
        aligned.candidate_features(np.array([[0, 1, 2]]), taste),
        table.candidate_features_by_id(catalog[None, :], taste),
        rtol=1e-6,
    )
    table.save(str(tmp_path / "table"))
    loaded = SongFeatureTable.load(str(tmp_path / "table"))
    ids = np.array([["s1", "s20", "zzz"]])
    np.testing.assert_array_equal(
        loaded.candidate_features_by_id(ids, taste), table.candidate_features_by_id(ids, taste)
    )


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="horizon_days"):
        SongTableConfig(horizon_days=1)
    with pytest.raises(ValueError, match="return_source"):
        SongTableConfig(return_source="all")


def test_fit_from_a_simulated_log_knows_sticky_songs(tmp_path) -> None:
    """End to end on a small simulated world: the fitted stickiness ranks songs like the
    simulator's true per-song stickiness logit (Spearman > 0 over songs with discoveries)."""
    from scipy.stats import spearmanr

    from rl.decision.observation import ObservationLayout
    from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy
    from rl.feedback.log import FeedbackLogWriter
    from rl.longterm.song_table import fit_song_table
    from rl.simulator.config import SimulatorConfig
    from rl.simulator.corpus import build_corpus
    from rl.simulator.simulation import Simulator

    rng = np.random.default_rng(0)
    latents = rng.normal(size=(150, 3)).astype(np.float32)
    ids = np.array([f"t{i}" for i in range(150)])
    config = SimulatorConfig(stickiness_std=1.5)
    corpus = build_corpus(latents, ids, 4, config, rng)
    layout = ObservationLayout(k=4, latent_dim=3)
    policy = MyopicListenPolicy(ListenProbabilityModel(layout, corpus.latent_scale))
    simulator = Simulator(corpus, 400, policy, layout, config=config, seed=1)
    log = str(tmp_path / "log")
    with FeedbackLogWriter(log, k=4, n_betas=layout.n_betas) as writer:
        simulator.run(16, writer=writer)
    table = fit_song_table(log, corpus.latents, corpus.track_ids, engine="pyarrow")
    assert table.horizon_days == 8
    aligned = table.aligned(corpus.track_ids)
    seen = aligned.discoveries >= 5
    assert seen.sum() >= 10
    rho = spearmanr(aligned.stickiness[seen], corpus.stickiness[seen]).statistic
    assert rho > 0.2
    shown = aligned.impressions >= 20
    rho_click = spearmanr(aligned.clickiness_logit[shown], corpus.clickiness[shown]).statistic
    assert rho_click > 0.2
