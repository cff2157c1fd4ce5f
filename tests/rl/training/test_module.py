"""The candidate actor-critic RLModule: shapes, masking, permutation equivariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl.decision.observation import ObservationLayout, encode_context
from rl.training.module import build_module, module_spec


def random_obs(layout: ObservationLayout, batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k, d, r = layout.k, layout.latent_dim, layout.n_betas
    mask = np.ones((batch, k), np.float32)
    mask[::2, -1] = 0.0  # every other row has one padded candidate
    return layout.build(
        rng.normal(size=(batch, d)),
        rng.normal(size=(batch, d)),
        encode_context(rng.integers(0, 24, batch), rng.integers(0, 7, batch)),
        rng.normal(size=(batch, k, d)),
        rng.uniform(size=(batch, k, r)),
        mask,
    )


@pytest.fixture
def layout() -> ObservationLayout:
    return ObservationLayout(k=4, latent_dim=5)


def test_shapes_and_masked_probabilities(layout):
    module = build_module(layout, hidden_sizes=(16, 8))
    obs = torch.from_numpy(random_obs(layout, 6))
    logits = module.candidate_logits(obs)
    probs = torch.softmax(logits, -1)
    assert logits.shape == (6, 4)
    assert module.state_values(obs).shape == (6,)
    assert torch.all(probs[::2, -1] == 0.0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(6))
    out = module.forward_inference({"obs": obs})
    torch.testing.assert_close(out["action_dist_inputs"], logits)
    torch.testing.assert_close(module.compute_values({"obs": obs}), module.state_values(obs))


def test_actor_is_permutation_equivariant_and_critic_invariant(layout):
    module = build_module(layout)
    obs = random_obs(layout, 3)
    obs[:, -layout.k :] = 1.0  # all candidates real
    parts = layout.split(obs)
    order = np.array([2, 0, 3, 1])
    permuted = layout.build(
        parts["current_latent"],
        parts["user_taste"],
        parts["context"],
        parts["candidate_latents"][:, order],
        parts["candidate_relationship"][:, order],
        parts["candidate_mask"][:, order],
    )
    with torch.no_grad():
        logits = module.candidate_logits(torch.from_numpy(obs))
        logits_perm = module.candidate_logits(torch.from_numpy(permuted))
        torch.testing.assert_close(logits_perm, logits[:, order])
        torch.testing.assert_close(
            module.state_values(torch.from_numpy(permuted)),
            module.state_values(torch.from_numpy(obs)),
        )


def test_default_hidden_sizes_are_the_blogs(layout):
    module = build_module(layout)
    widths = [m.out_features for m in module.candidate_scorer if isinstance(m, torch.nn.Linear)]
    assert widths == [128, 128, 1]


def test_bad_configuration_is_refused(layout):
    with pytest.raises(ValueError, match="hidden_sizes"):
        module_spec(layout, hidden_sizes=(0,)).build()
    spec = module_spec(layout)
    spec.model_config = {}
    with pytest.raises(ValueError, match="layout"):
        spec.build()
