"""The offline PPO loss against numbers computed by hand on a fixed batch."""

from __future__ import annotations

import math

import pytest
import torch

from rl.training.ppo_loss import offline_ppo_loss, session_advantages


def test_ppo_loss_matches_hand_computation():
    # Two decisions over k=2 candidates (the second with one padded candidate).
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, -1e9]])  # pi = [.25,.75], [1, 0]
    actions = torch.tensor([1, 0])
    behaviour_logp = torch.log(torch.tensor([0.5, 0.8]))
    values = torch.tensor([1.0, 0.0])
    value_targets = torch.tensor([2.0, -1.0])
    advantages = torch.tensor([1.0, -2.0])
    terms = offline_ppo_loss(
        logits,
        actions,
        behaviour_logp,
        values,
        advantages,
        value_targets,
        clip=0.2,
        vf_coeff=0.5,
        entropy_coeff=0.1,
    )
    # rho = [0.75/0.5, 1/0.8] = [1.5, 1.25]
    # row 0 (A=+1): min(1.5*1, 1.2*1) = 1.2; row 1 (A=-2): min(1.25*-2, 1.2*-2) = -2.5
    policy_loss = -(1.2 + -2.5) / 2
    vf_loss = ((1 - 2) ** 2 + (0 + 1) ** 2) / 2
    entropy = (-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) + 0.0) / 2
    assert terms.policy_loss.item() == pytest.approx(policy_loss, abs=1e-6)
    assert terms.vf_loss.item() == pytest.approx(vf_loss, abs=1e-6)
    assert terms.entropy.item() == pytest.approx(entropy, abs=1e-6)
    assert terms.total.item() == pytest.approx(
        policy_loss + 0.5 * vf_loss - 0.1 * entropy, abs=1e-6
    )
    assert terms.mean_ratio.item() == pytest.approx(1.375, abs=1e-6)
    assert terms.clip_fraction.item() == pytest.approx(1.0)


def test_gradient_flows_only_through_unclipped_side():
    logits = torch.zeros(1, 2, requires_grad=True)  # pi(a)=0.5
    behaviour_logp = torch.log(torch.tensor([0.25]))  # rho = 2 > 1 + clip
    terms = offline_ppo_loss(
        logits,
        torch.tensor([0]),
        behaviour_logp,
        torch.zeros(1),
        torch.tensor([1.0]),
        torch.zeros(1),
        clip=0.2,
        vf_coeff=0.0,
        entropy_coeff=0.0,
    )
    terms.total.backward()
    # Positive advantage with rho above 1+eps: the clipped term is the min, no gradient.
    assert torch.count_nonzero(logits.grad) == 0


def test_session_advantages_normalises_and_keeps_targets_raw():
    rewards = torch.tensor([1.0, 0.0, 2.0])
    values = torch.zeros(3)
    adv, targets = session_advantages(
        rewards,
        values,
        torch.zeros(3),
        torch.tensor([False, True, True]),
        torch.tensor([0, 1, 0]),
        gamma=0.5,
        lambda_=1.0,
        normalize=True,
    )
    assert targets.tolist() == pytest.approx([1.0, 0.0, 2.0])
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert adv.std().item() == pytest.approx(1.0, abs=1e-4)
