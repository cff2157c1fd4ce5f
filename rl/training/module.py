"""The actor-critic RLModule that ranks the k retrieved candidates (the blog's step 3).

Sits between training and serving: RLlib's learners train it offline (ppo_learner.py,
MARWIL, BC), the registry stores its checkpoint, and ``rl.registry.PolicyScorer`` runs it
as plain torch in the simulator and the served Scorer.

Actor: one shared MLP scores every candidate from
``[current latent, user taste, context, candidate latent, candidate relationship state,
candidate song features]`` (the last: what the logs revealed about the song --
clickiness, stickiness, popularity -- when the layout has ``song_feature_dim > 0``);
the k scores are the logits of a categorical over candidates, padded candidates
(``candidate_mask == 0``) get a logit of -1e9 so their probability is exactly 0.
Sharing the scorer across candidates makes the policy permutation-equivariant: it ranks
songs by what they are, not by the slot kNN happened to put them in.

Critic: V(state) from ``[current latent, taste, context, masked mean and max of the
candidate features]`` -- the pooled candidates describe what the user can be offered next,
which is part of the state an action is taken in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from rl.decision.observation import ObservationLayout
from rl.training.config import DEFAULT_HIDDEN_SIZES  # the blog's two layers of 128 units

MASKED_LOGIT = -1e9
"""Logit of a padded candidate: exp underflows to exactly 0 probability, no NaN."""


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> nn.Sequential:
    """A ReLU MLP with a linear output layer."""
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class CandidateActorCriticModule(TorchRLModule, ValueFunctionAPI):
    """Shared-scorer actor over k candidates plus a state-value critic.

    ``model_config`` keys: ``layout`` (``ObservationLayout.to_dict()``, required) and
    ``hidden_sizes`` (sequence of ints, default (128, 128)).
    """

    def setup(self) -> None:
        config: dict[str, Any] = dict(self.model_config or {})  # type: ignore[arg-type]
        if "layout" not in config:
            raise ValueError("model_config must contain 'layout' (ObservationLayout.to_dict())")
        self.layout = ObservationLayout.from_dict(config["layout"])
        self.hidden_sizes = tuple(int(h) for h in config.get("hidden_sizes", DEFAULT_HIDDEN_SIZES))
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive ints, got {self.hidden_sizes}")
        assert self.observation_space is not None and self.observation_space.shape is not None
        obs_dim = int(np.prod(self.observation_space.shape))
        if obs_dim != self.layout.size:
            raise ValueError(
                f"observation space has {obs_dim} features but the layout needs {self.layout.size}"
            )
        if getattr(self.action_space, "n", None) != self.layout.k:
            raise ValueError(
                f"action space must be Discrete({self.layout.k}), got {self.action_space}"
            )
        state_dim, candidate_dim = self.layout.state_dim, self.layout.candidate_dim
        self.candidate_scorer = mlp(state_dim + candidate_dim, self.hidden_sizes, 1)
        # The critic is needed for training only; inference-only copies skip it.
        if not self.inference_only:
            self.critic = mlp(state_dim + 2 * candidate_dim, self.hidden_sizes, 1)

    # --- shared pieces -------------------------------------------------------------------
    def _parts(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs (B, size) -> state (B, S), candidates (B, K, Cd), mask (B, K) bool."""
        parts = self.layout.split(obs)
        state = torch.cat([parts["current_latent"], parts["user_taste"], parts["context"]], dim=1)
        candidates = torch.cat(
            [
                parts["candidate_latents"],
                parts["candidate_relationship"],
                parts["candidate_song_features"],
            ],
            dim=2,
        )
        mask = parts["candidate_mask"] > 0.5
        # A row without any real candidate would give NaN probabilities; treat all slots
        # as real instead (such rows carry no decision and never reach serving).
        mask = mask | ~mask.any(dim=1, keepdim=True)
        return state, candidates, mask

    def candidate_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, size) -> (B, K) masked logits."""
        state, candidates, mask = self._parts(obs)
        k = candidates.shape[1]
        scorer_in = torch.cat([state.unsqueeze(1).expand(-1, k, -1), candidates], dim=2)
        logits = self.candidate_scorer(scorer_in).squeeze(-1)
        return logits.masked_fill(~mask, MASKED_LOGIT)

    def state_values(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, size) -> (B,) V(state)."""
        state, candidates, mask = self._parts(obs)
        weights = mask.unsqueeze(-1).to(candidates.dtype)
        mean_pool = (candidates * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        max_pool = candidates.masked_fill(~mask.unsqueeze(-1), -1e4).amax(1)
        return self.critic(torch.cat([state, mean_pool, max_pool], dim=1)).squeeze(-1)

    # --- RLlib API -----------------------------------------------------------------------
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.candidate_logits(batch[Columns.OBS].float())}

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        return self.state_values(batch[Columns.OBS].float())


def observation_space(layout: ObservationLayout) -> gym.spaces.Box:
    """The flat observation space of a layout (unbounded: latents are not normalised)."""
    return gym.spaces.Box(-np.inf, np.inf, shape=(layout.size,), dtype=np.float32)


def action_space(layout: ObservationLayout) -> gym.spaces.Discrete:
    """Index of the chosen candidate."""
    return gym.spaces.Discrete(layout.k)


def module_spec(
    layout: ObservationLayout, hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES
) -> RLModuleSpec:
    """The RLModuleSpec every algorithm (offline PPO, MARWIL, BC) trains."""
    return RLModuleSpec(
        module_class=CandidateActorCriticModule,
        observation_space=observation_space(layout),
        action_space=action_space(layout),
        model_config={"layout": layout.to_dict(), "hidden_sizes": list(hidden_sizes)},
    )


def build_module(
    layout: ObservationLayout, hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES
) -> CandidateActorCriticModule:
    """A freshly initialised module (tests, the plain-torch benchmark)."""
    module = module_spec(layout, hidden_sizes).build()
    assert isinstance(module, CandidateActorCriticModule)
    return module
