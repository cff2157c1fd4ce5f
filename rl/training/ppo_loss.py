"""The offline PPO objective as a plain torch function (no Ray).

The RLlib learner (ppo_learner.py) and the plain-torch benchmark loop both call
``offline_ppo_loss`` so the two compute exactly the same thing; the formula and its
reference are in ``OfflinePPOTorchLearner``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rl.training.gae import generalized_advantages, segment_ends


@dataclass(frozen=True)
class PPOLossTerms:
    """Scalar tensors of one loss evaluation."""

    total: torch.Tensor
    policy_loss: torch.Tensor
    vf_loss: torch.Tensor
    entropy: torch.Tensor
    mean_ratio: torch.Tensor
    clip_fraction: torch.Tensor


def session_advantages(
    rewards: torch.Tensor,  # (B,)
    values: torch.Tensor,  # (B,) V(s_t), current critic
    next_values: torch.Tensor,  # (B,) V(s_{t+1})
    terminateds: torch.Tensor,  # (B,) bool
    session_step: torch.Tensor | None,  # (B,) step index in the session, None for 1-step rows
    gamma: float,
    lambda_: float,
    normalize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the minibatch's session segments -> (advantages, value_targets), detached."""

    def to_np(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy()

    terminated_np = to_np(terminateds).astype(bool)
    if session_step is None:
        ends = segment_ends(np.zeros(len(terminated_np)), terminated_np, chain_steps=False)
    else:
        ends = segment_ends(to_np(session_step), terminated_np)
    advantages_np, targets_np = generalized_advantages(
        to_np(rewards), to_np(values), to_np(next_values), terminated_np, ends, gamma, lambda_
    )
    advantages = torch.from_numpy(advantages_np).to(values.device)
    targets = torch.from_numpy(targets_np).to(values.device)
    if normalize and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return advantages, targets


def offline_ppo_loss(
    logits: torch.Tensor,  # (B, K) masked candidate logits
    actions: torch.Tensor,  # (B,) logged chosen index
    behaviour_logp: torch.Tensor,  # (B,) log pi_b(a|s) logged at serving time
    values: torch.Tensor,  # (B,) V_theta(s), with grad
    advantages: torch.Tensor,  # (B,) detached
    value_targets: torch.Tensor,  # (B,) detached
    clip: float,
    vf_coeff: float,
    entropy_coeff: float,
) -> PPOLossTerms:
    """L = -E[min(rho A, clip(rho, 1-eps, 1+eps) A)] + c_v E[(V - V_target)^2] - c_e E[H]."""
    log_probs = torch.log_softmax(logits, dim=-1)
    logp = log_probs.gather(1, actions.long().unsqueeze(1)).squeeze(1)
    ratio = torch.exp(logp - behaviour_logp)
    surrogate = torch.minimum(
        ratio * advantages, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    )
    policy_loss = -surrogate.mean()
    vf_loss = torch.mean((values - value_targets) ** 2)
    probs = log_probs.exp()
    # Masked candidates have p == 0 exactly; 0 * (-1e9) is 0, so they add no entropy.
    entropy = -(probs * log_probs).sum(-1).mean()
    total = policy_loss + vf_coeff * vf_loss - entropy_coeff * entropy
    with torch.no_grad():
        clip_fraction = ((ratio - 1.0).abs() > clip).float().mean()
    return PPOLossTerms(total, policy_loss, vf_loss, entropy, ratio.mean().detach(), clip_fraction)
