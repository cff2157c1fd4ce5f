"""Q-scorers: formulas, arm rankings on a constructed case, and the DecisionPolicy face."""

from __future__ import annotations

import numpy as np
import pytest

from rl.decision.observation import ObservationLayout, encode_context
from rl.decision.policies import DecisionPolicy
from rl.longterm.clickiness import ClickinessModel, clickiness_features
from rl.longterm.q_scoring import (
    CandidateBatch,
    ControlScorer,
    LatentItemLookup,
    PersonalisedScorer,
    QScoringPolicy,
    ResurfacingScorer,
    SquareRootScorer,
    UnpersonalisedScorer,
    corollary1_q,
    stream_probability,
)
from rl.longterm.stickiness import StateStickinessModel, StickinessModel

BETAS = (0.5, 0.9, 0.97, 0.99)
DIM = 3


def test_corollary1_and_eq18() -> None:
    p_org = np.array([0.0, 0.3, 0.5])
    p_from_rec = np.array([0.4, 0.4, 0.0])
    p_rec = stream_probability(p_org, p_from_rec)
    np.testing.assert_allclose(p_rec, [0.4, 0.58, 0.5])
    q = corollary1_q(p_rec, p_org, np.array([10.0, 20.0, 5.0]), np.array([0.0, 15.0, 5.0]))
    np.testing.assert_allclose(q, [0.4 * 11, 0.28 * 6, 0.0])


@pytest.fixture(scope="module")
def models():
    """Item 0: clicky but never returned to; item 1: less clicky, sticky for taste[0] > 0."""
    rng = np.random.default_rng(0)
    latents = np.array([[1.0, 0, 0], [0.9, 0.1, 0], [-1, 0, 0], [0, 1, 0]], np.float32)
    n = 6000
    taste = rng.normal(size=(n, DIM)).astype(np.float32)
    item = rng.integers(0, 4, size=n)
    click_logit = np.array([1.5, -0.5, 0.0, 0.0])[item]
    listened = rng.random(n) < 1 / (1 + np.exp(-click_logit))
    features = clickiness_features(
        taste, latents[item], np.zeros((n, 4)), np.zeros((n, len(BETAS)))
    )
    features[:, DIM : 2 * DIM] += np.eye(4)[item][:, :DIM]  # make items separable by latent
    clickiness = ClickinessModel(hidden_units=0, epochs=5).fit(
        clickiness_features(
            taste, latents[item] + np.eye(4, DIM)[item], np.zeros((n, 4)), np.zeros((n, len(BETAS)))
        ),
        listened,
    )
    returns = np.where(item == 1, 10 + 8 * taste[:, 0], np.where(item == 0, 0.0, 3.0)) + rng.normal(
        size=n
    )
    stickiness = StickinessModel(l2=1.0, mean_shrinkage=1.0).fit(
        taste, np.clip(returns, 0, 59), item, 4
    )
    return latents + np.eye(4, DIM, dtype=np.float32), clickiness, stickiness


def batch_for(latents, taste, relationship=None) -> CandidateBatch:
    b = len(taste)
    items = np.tile(np.arange(4), (b, 1))
    rel = np.zeros((b, 4, len(BETAS)), np.float32) if relationship is None else relationship
    return CandidateBatch(
        user_taste=np.asarray(taste, np.float32),
        context=encode_context(np.full(b, 12), np.zeros(b)),
        candidate_items=items,
        candidate_latents=np.broadcast_to(latents, (b, 4, DIM)).copy(),
        candidate_relationship=rel,
        candidate_mask=np.ones((b, 4), bool),
    )


def test_arms_rank_as_the_paper_expects(models) -> None:
    latents, clickiness, stickiness = models
    batch = batch_for(latents, [[2.0, 0, 0], [-2.0, 0, 0]])
    control = ControlScorer(clickiness).score(batch)
    personalised = PersonalisedScorer(clickiness, stickiness).score(batch)
    unpersonalised = UnpersonalisedScorer(clickiness, stickiness).score(batch)
    root = SquareRootScorer(clickiness, stickiness).score(batch)
    assert (control.argmax(1) == 0).all()  # myopic: the clicky item
    assert personalised.argmax(1)[0] == 1  # sticky for this taste
    assert personalised.argmax(1)[1] != 1  # ... but not for the opposite taste
    assert unpersonalised.argmax(1)[0] == 1 and unpersonalised.argmax(1)[1] == 1  # same for all
    c = ControlScorer(clickiness).score(batch)
    np.testing.assert_allclose(
        personalised, c * (1 + stickiness.predict(batch.user_taste, batch.candidate_items))
    )
    np.testing.assert_allclose(
        root, c * np.sqrt(stickiness.predict_unpersonalised(batch.candidate_items))
    )


def test_resurfacing_reduces_to_discovery_for_unheard_items(models) -> None:
    latents, clickiness, stickiness = models
    batch = batch_for(latents, np.random.default_rng(1).normal(size=(5, DIM)))
    resurfacing = ResurfacingScorer(clickiness, stickiness, BETAS).score(batch)
    np.testing.assert_allclose(
        resurfacing, PersonalisedScorer(clickiness, stickiness).score(batch), rtol=1e-6
    )


def test_resurfacing_uses_state_model_and_organic_probability(models) -> None:
    latents, clickiness, stickiness = models
    rng = np.random.default_rng(2)
    n = 3000
    state = rng.random((n, len(BETAS))).astype(np.float32)
    taste = rng.normal(size=(n, DIM))
    items = rng.integers(0, 4, size=n)
    state_model = StateStickinessModel(l2=1.0).fit(
        state, taste, 30 * np.sqrt(state[:, 3]), items, 4
    )
    organic = ClickinessModel(hidden_units=0, epochs=20).fit(
        clickiness_features(taste, latents[items], np.zeros((n, 4)), state),
        rng.random(n) < state[:, 0],
    )
    relationship = np.zeros((2, 4, len(BETAS)), np.float32)
    relationship[:, 2] = [0.01, 0.05, 0.1, 0.1]  # weak, old habit
    relationship[:, 3] = [0.9, 0.9, 0.9, 0.9]  # daily habit already
    batch = batch_for(latents, rng.normal(size=(2, DIM)), relationship)
    scorer = ResurfacingScorer(clickiness, stickiness, BETAS, state_model, organic)
    after, before = scorer.stickiness_gain(batch)
    gain = after - before
    assert (gain[:, 2] > gain[:, 3]).all()  # concave in s: more to gain from a weak habit
    p_org = scorer.organic_probability(batch)
    assert (p_org[:, 3] > p_org[:, 2]).all()
    expected = corollary1_q(ControlScorer(clickiness).score(batch), p_org, after, before)
    np.testing.assert_allclose(scorer.score(batch), expected)


def test_policy_face(models) -> None:
    latents, clickiness, stickiness = models
    layout = ObservationLayout(k=4, latent_dim=DIM, betas=BETAS)
    b = 3
    order = np.array([[1, 0, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], np.float32)
    obs = layout.build(
        current_latent=np.zeros((b, DIM)),
        user_taste=np.array([[2.0, 0, 0]] * b),
        context=encode_context(np.full(b, 9), np.zeros(b)),
        candidate_latents=latents[order],
        candidate_relationship=np.zeros((b, 4, len(BETAS))),
        candidate_mask=mask,
    )
    policy = QScoringPolicy(PersonalisedScorer(clickiness, stickiness), layout, latents)
    assert isinstance(policy, DecisionPolicy)
    probabilities = policy.action_probabilities(obs)
    np.testing.assert_allclose(probabilities.sum(1), 1.0)
    assert (probabilities[mask == 0] == 0).all()
    assert probabilities[0].argmax() == 0  # slot 0 holds item 1, the sticky one
    soft = QScoringPolicy(ControlScorer(clickiness), layout, latents, temperature=0.5)
    p = soft.action_probabilities(obs)
    assert ((p > 0) == (mask > 0)).all()
    lookup = LatentItemLookup(latents)
    np.testing.assert_array_equal(lookup.rows(latents[[2, 0]] + np.float32(1e-3)), [2, 0])
