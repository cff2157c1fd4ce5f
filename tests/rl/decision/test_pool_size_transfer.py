"""A policy trained at one pool size scores any pool size: the actor is one shared
per-candidate scorer with masking (rl/training/module.py), so its weights do not depend
on k; the critic pools candidates with a masked mean and max, so it does not either.
What changes with k is only the layout the observation is built with."""

from dataclasses import replace

import numpy as np
import torch

from rl.decision.observation import ObservationLayout
from rl.training.module import build_module


def _obs(layout, rng, n_real):
    batch = 32
    mask = np.zeros((batch, layout.k), np.float32)
    mask[:, :n_real] = 1
    return layout.build(
        current_latent=rng.standard_normal((batch, layout.latent_dim)),
        user_taste=rng.standard_normal((batch, layout.latent_dim)),
        context=rng.standard_normal((batch, layout.context_dim)),
        candidate_latents=rng.standard_normal((batch, layout.k, layout.latent_dim))
        * mask[..., None],
        candidate_relationship=rng.random((batch, layout.k, layout.n_betas)) * mask[..., None],
        candidate_mask=mask,
        candidate_song_features=rng.standard_normal((batch, layout.k, 4)) * mask[..., None],
    )


def test_a_k4_policy_scores_a_k20_pool_with_the_same_weights():
    small = ObservationLayout(k=4, song_feature_dim=4)
    large = replace(small, k=20)
    trained = build_module(small)
    transferred = build_module(large)
    transferred.load_state_dict(trained.state_dict(), strict=True)  # same shapes at any k

    rng = np.random.default_rng(0)
    obs20 = _obs(large, rng, n_real=20)
    parts = large.split(obs20)
    with torch.no_grad():
        logits20 = transferred.candidate_logits(torch.as_tensor(obs20)).numpy()
        # Any 4 of the 20 candidates, scored by the k=4 module: the same logits.
        for start in (0, 7, 16):
            window = slice(start, start + 4)
            obs4 = small.build(
                parts["current_latent"], parts["user_taste"], parts["context"],
                parts["candidate_latents"][:, window], parts["candidate_relationship"][:, window],
                parts["candidate_mask"][:, window], parts["candidate_song_features"][:, window],
            )  # fmt: skip
            logits4 = trained.candidate_logits(torch.as_tensor(obs4)).numpy()
            np.testing.assert_allclose(logits20[:, window], logits4, rtol=1e-5, atol=1e-5)

        # A k=20 observation holding only 4 real candidates: same probabilities and value.
        obs20_short = _obs(large, np.random.default_rng(1), n_real=4)
        p = large.split(obs20_short)
        obs4 = small.build(
            p["current_latent"], p["user_taste"], p["context"], p["candidate_latents"][:, :4],
            p["candidate_relationship"][:, :4], p["candidate_mask"][:, :4],
            p["candidate_song_features"][:, :4],
        )  # fmt: skip
        probs20 = torch.softmax(transferred.candidate_logits(torch.as_tensor(obs20_short)), 1)
        probs4 = torch.softmax(trained.candidate_logits(torch.as_tensor(obs4)), 1)
        np.testing.assert_allclose(probs20[:, :4].numpy(), probs4.numpy(), rtol=1e-5, atol=1e-6)
        assert float(probs20[:, 4:].max()) == 0.0
        np.testing.assert_allclose(
            transferred.state_values(torch.as_tensor(obs20_short)).numpy(),
            trained.state_values(torch.as_tensor(obs4)).numpy(),
            rtol=1e-5,
            atol=1e-5,
        )
