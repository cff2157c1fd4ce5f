"""How every arm of the simulated A/B test picks: the long-term Q-scorers and decision
policies (the PPO arms) rank the same candidate batches.

Where it sits: rl/experiments/ab_test.py runs the banner and the shelf with these; a
Q-scorer ranks by its own score, a decision policy by its action probabilities on the
observation the service would build for the same user, day and candidates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rl.decision.observation import encode_context
from rl.decision.policies import DecisionPolicy
from rl.longterm.q_scoring import CandidateBatch, QScorer

if TYPE_CHECKING:
    from rl.experiments.ab_test import World


def candidate_batch(
    world: World, users: np.ndarray, candidates: np.ndarray, hour: np.ndarray
) -> CandidateBatch:
    """Scorer input for simulator users (rows) and candidate song rows (B, K), -1 padding."""
    sim, models = world.simulator, world.models
    mask = candidates >= 0
    safe = np.maximum(candidates, 0)
    user_codes = pd.Index(models.relationship._user_ids).get_indexer(sim.user_ids(users))
    relationship = models.relationship.states_by_code(
        np.broadcast_to(user_codes[:, None], candidates.shape), np.where(mask, safe, -1), sim.day
    )
    known_user = user_codes >= 0
    activity = np.zeros(len(users), np.float32)
    activity[known_user] = models.user_features.activity.transform(
        user_codes[known_user], np.full(known_user.sum(), sim.day)
    )
    taste = sim.state.taste[users].astype(np.float32)
    return CandidateBatch(
        user_taste=taste,
        user_features=np.concatenate([taste, activity[:, None]], axis=1),
        context=encode_context(hour, np.full(len(users), sim.day % 7)),
        candidate_items=np.where(mask, safe, -1),
        candidate_latents=models.item_latents[safe] * mask[..., None],
        candidate_relationship=relationship,
        candidate_mask=mask,
    )


def rank_candidates(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B, K) scores -> (B, K) candidate indices, best first (padding last)."""
    return np.argsort(np.where(mask, -scores, np.inf), axis=1, kind="stable")


def policy_probabilities(
    policy: DecisionPolicy, world: World, batch: CandidateBatch, control_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(order (B, K) by clickiness, the policy's probabilities (B, k) over its top k; padded
    candidates get -1)."""
    k = world.layout.k
    order = rank_candidates(control_scores, batch.candidate_mask)
    top = order[:, :k]
    rows = np.arange(len(order))[:, None]
    obs = world.layout.build(
        current_latent=batch.user_taste,  # no current song on a banner/shelf: the taste stands in
        user_taste=batch.user_taste,
        context=batch.context,
        candidate_latents=batch.candidate_latents[rows, top],
        candidate_relationship=batch.candidate_relationship[rows, top],
        candidate_mask=batch.candidate_mask[rows, top],
    )
    probabilities = np.where(
        batch.candidate_mask[rows, top], policy.action_probabilities(obs), -1.0
    )
    return order, probabilities


def ppo_ranking(
    policy: DecisionPolicy, world: World, batch: CandidateBatch, control_scores: np.ndarray
) -> np.ndarray:
    """A k-candidate policy ranks the top-k by clickiness; the rest keep the control order."""
    order, probabilities = policy_probabilities(policy, world, batch, control_scores)
    top = order[:, : probabilities.shape[1]]
    reordered = np.take_along_axis(top, np.argsort(-probabilities, axis=1, kind="stable"), axis=1)
    return np.concatenate([reordered, order[:, probabilities.shape[1] :]], axis=1)


PolicyArms = Mapping[str, DecisionPolicy]


def policy_arms(ppo: DecisionPolicy | PolicyArms | None) -> dict[str, DecisionPolicy]:
    """One policy (the arm "ppo"), several by arm name, or none."""
    if ppo is None:
        return {}
    if isinstance(ppo, Mapping):
        return dict(ppo)
    return {"ppo": ppo}


def arm_rankings(
    world: World,
    scorers: dict[str, QScorer],
    batch: CandidateBatch,
    ppo: DecisionPolicy | PolicyArms | None,
) -> dict[str, np.ndarray]:
    rankings = {
        name: rank_candidates(scorer.score(batch), batch.candidate_mask)
        for name, scorer in scorers.items()
    }
    policies = policy_arms(ppo)
    if policies:
        control_scores = scorers["control"].score(batch)
        for name, policy in policies.items():
            rankings[name] = ppo_ranking(policy, world, batch, control_scores)
    return rankings


def policy_entropy(
    policy: DecisionPolicy, world: World, batch: CandidateBatch, control_scores: np.ndarray
) -> np.ndarray:
    """(B,) entropy (nats) of the policy's distribution over its k candidates."""
    _, probabilities = policy_probabilities(policy, world, batch, control_scores)
    p = np.clip(probabilities, 0.0, 1.0)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
