"""Offline PPO on RLlib: a learner with PPO's clipped loss driven by MARWIL's offline loop.

RLlib 2.60 has no offline PPO. MARWIL's ``training_step`` reads offline data through Ray
Data and feeds learners, so ``OfflinePPOConfig`` is a ``MARWILConfig`` whose learner is
``OfflinePPOTorchLearner`` and whose learner connector only batches the logged columns
(obs, new_obs, actions, rewards, terminateds, action_logp, session_step). Advantages are
*not* computed in the connector: that runs inside Ray Data workers holding a frozen copy
of the module, so its critic would never improve. The learner computes GAE on every
minibatch with the current critic instead (gae.py).
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.marwil.marwil import MARWILConfig
from ray.rllib.algorithms.marwil.torch.marwil_torch_learner import MARWILTorchLearner
from ray.rllib.connectors.learner import (
    AddNextObservationsFromEpisodesToTrainBatch,
    AddObservationsFromEpisodesToBatch,
)
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY

from rl.training.ppo_loss import offline_ppo_loss, session_advantages

SESSION_STEP = "session_step"
"""Extra per-step column: the step's index t within its session (episodes.py writes it)."""


class OfflinePPOConfig(MARWILConfig):
    """MARWIL's offline training loop with the offline PPO learner.

    Extra hyper-parameters (set with ``.training(...)``): ``clip_param`` (PPO's epsilon),
    ``entropy_coeff``, ``lambda_`` (GAE), ``normalize_advantages``; ``gamma`` and
    ``vf_coeff`` are MARWIL's own.
    """

    def __init__(self, algo_class: Any = None) -> None:
        super().__init__(algo_class=algo_class)
        self.clip_param = 0.2
        self.entropy_coeff = 0.01
        self.lambda_ = 0.95
        self.normalize_advantages = True
        self.vf_coeff = 0.5

    def training(  # type: ignore[override]
        self,
        *,
        clip_param: Any = NotProvided,
        entropy_coeff: Any = NotProvided,
        lambda_: Any = NotProvided,
        normalize_advantages: Any = NotProvided,
        **kwargs: Any,
    ) -> OfflinePPOConfig:
        super().training(**kwargs)
        if clip_param is not NotProvided:
            self.clip_param = clip_param
        if entropy_coeff is not NotProvided:
            self.entropy_coeff = entropy_coeff
        if lambda_ is not NotProvided:
            self.lambda_ = lambda_
        if normalize_advantages is not NotProvided:
            self.normalize_advantages = normalize_advantages
        return self

    def get_default_learner_class(self) -> type:
        return OfflinePPOTorchLearner

    def build_learner_connector(
        self, input_observation_space: Any, input_action_space: Any, device: Any = None
    ) -> Any:
        # The default pipeline (obs, actions, rewards, terminateds, extra outputs such as
        # action_logp and session_step) plus next observations for bootstrapping; none
        # of MARWIL's GAE or artificial extra time step.
        pipeline: Any = AlgorithmConfig.build_learner_connector(
            self, input_observation_space, input_action_space, device=device
        )
        pipeline.insert_after(
            AddObservationsFromEpisodesToBatch, AddNextObservationsFromEpisodesToTrainBatch()
        )
        return pipeline

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.clip_param < 1.0:
            self._value_error(f"clip_param must be in (0, 1), got {self.clip_param}")
        if not 0.0 <= self.lambda_ <= 1.0:
            self._value_error(f"lambda_ must be in [0, 1], got {self.lambda_}")
        if self.entropy_coeff < 0.0:
            self._value_error(f"entropy_coeff must be >= 0, got {self.entropy_coeff}")


class OfflinePPOTorchLearner(MARWILTorchLearner):
    """PPO's clipped surrogate on logged data, importance-weighted against the logger.

    Objective (minimised), over logged steps (s, a, r, s') with behaviour log-probability
    log pi_b(a|s) recorded when the recommendation was served:

        rho   = pi_theta(a|s) / pi_b(a|s) = exp(log pi_theta(a|s) - behaviour_logp)
        L     = -E[min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)]
                + c_v * E[(V_theta(s) - V_target)^2] - c_e * E[H(pi_theta(.|s))]

    A and V_target come from GAE(gamma, lambda) over each logged session with the current
    critic (gae.py). In on-policy PPO, pi_b is the policy that collected the batch; here
    it is the logging policy, so the clip keeps the new policy within a trust region of
    what the logs can vouch for.

    References: Schulman et al., "Proximal Policy Optimization Algorithms" (2017),
    arXiv:1707.06347; RLlib's PPOTorchLearner (ray/rllib/algorithms/ppo/torch).
    """

    def compute_loss_for_module(
        self,
        *,
        module_id: str,
        config: Any = None,
        batch: dict[str, Any],
        fwd_out: dict[str, Any],
    ) -> Any:
        module: Any = self.module[module_id].unwrapped()
        values = module.compute_values(batch)
        next_values = module.compute_values({Columns.OBS: batch[Columns.NEXT_OBS]})
        advantages, value_targets = session_advantages(
            rewards=batch[Columns.REWARDS],
            values=values,
            next_values=next_values,
            terminateds=batch[Columns.TERMINATEDS],
            session_step=batch.get(SESSION_STEP),
            gamma=config.gamma,
            lambda_=config.lambda_,
            normalize=config.normalize_advantages,
        )
        terms = offline_ppo_loss(
            logits=fwd_out[Columns.ACTION_DIST_INPUTS],
            actions=batch[Columns.ACTIONS],
            behaviour_logp=batch[Columns.ACTION_LOGP].float(),
            values=values,
            advantages=advantages,
            value_targets=value_targets,
            clip=config.clip_param,
            vf_coeff=config.vf_coeff,
            entropy_coeff=config.entropy_coeff,
        )
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: terms.policy_loss,
                VF_LOSS_KEY: terms.vf_loss,
                ENTROPY_KEY: terms.entropy,
                "mean_ratio": terms.mean_ratio,
                "clip_fraction": terms.clip_fraction,
                "total_loss": terms.total,
            },
            key=module_id,
            window=1,
        )
        return terms.total
