"""The served default's exploration: epsilon-greedy propensities sum to one, keep every
candidate reachable, and are exactly what the simulator logs as ``behaviour_logp``."""

from __future__ import annotations

import numpy as np
import pytest

from rl.decision.observation import ObservationLayout
from rl.decision.policies import (
    EpsilonGreedyPolicy,
    ListenProbabilityModel,
    MyopicListenPolicy,
    candidate_mask,
)


@pytest.fixture()
def world(rng):
    from rl.simulator.config import SimulatorConfig
    from rl.simulator.corpus import build_corpus

    latents = rng.normal(size=(120, 3)).astype(np.float32)
    ids = np.array([f"t{i}" for i in range(120)])
    corpus = build_corpus(latents, ids, 4, SimulatorConfig(), rng)
    layout = ObservationLayout(k=4, latent_dim=3)
    base = MyopicListenPolicy(ListenProbabilityModel(layout, corpus.latent_scale))
    return corpus, layout, base


@pytest.mark.parametrize("epsilon", [0.0, 0.05, 0.3, 1.0])
def test_probabilities_sum_to_one_and_floor_every_candidate(world, rng, epsilon) -> None:
    _, layout, base = world
    n = 200
    mask = np.ones((n, 4), bool)
    mask[:50, 3] = False  # padded slots get nothing
    obs = layout.build(
        rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), rng.normal(size=(n, 4)),
        rng.normal(size=(n, 4, 3)), rng.uniform(size=(n, 4, layout.n_betas)), mask,
    )  # fmt: skip
    policy = EpsilonGreedyPolicy(base, epsilon)
    probabilities = policy.action_probabilities(obs)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(probabilities[~mask] == 0)
    valid = candidate_mask(obs, layout)
    floor = epsilon / valid.sum(axis=1, keepdims=True)
    assert np.all(probabilities[valid] >= np.broadcast_to(floor, valid.shape)[valid] - 1e-12)
    greedy = np.argmax(base.action_probabilities(obs), axis=1)
    assert np.all(np.argmax(probabilities, axis=1) == greedy) or epsilon == 1.0


def test_logged_behaviour_logp_equals_the_policy_propensity(world, tmp_path) -> None:
    from rl.feedback.log import FeedbackLogWriter, read_decisions_table
    from rl.feedback.offline_steps import SessionStepBuilder
    from rl.simulator.simulation import Simulator

    corpus, layout, base = world
    policy = EpsilonGreedyPolicy(base, 0.1)
    simulator = Simulator(corpus, 150, policy, layout, seed=3)
    log = str(tmp_path / "log")
    with FeedbackLogWriter(log, k=4, n_betas=layout.n_betas) as writer:
        simulator.run(3, writer=writer)
    table = read_decisions_table(log)
    assert table.num_rows > 100
    obs = SessionStepBuilder(corpus.latents, list(corpus.track_ids), layout).observations(table)
    probabilities = policy.action_probabilities(obs)
    chosen = table["chosen_index"].to_numpy()
    logged = table["behaviour_logp"].to_numpy()
    np.testing.assert_allclose(
        logged, np.log(probabilities[np.arange(len(chosen)), chosen]), atol=1e-5
    )
    # Exploration happened: some picks were not the greedy one, each at propensity eps/k.
    explored = chosen != np.argmax(probabilities, axis=1)
    assert explored.any()
    np.testing.assert_allclose(np.exp(logged[explored]), 0.1 / 4, rtol=1e-4)


def test_epsilon_is_validated(world) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        EpsilonGreedyPolicy(world[2], 1.5)
