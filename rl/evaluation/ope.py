"""Off-policy evaluation of a decision policy on logged decisions (before it is served).

Where it sits: ``encore evaluate`` scores a registered policy on held-out logs with these
estimators and sets them beside the simulator's online values. Each logged decision
carries the logging policy's propensity (``behaviour_logp``), so the target policy's
mean reward per decision can be estimated without serving it:

    w_i    = pi(a_i | s_i) / pi_b(a_i | s_i)
    IPS    = (1/n) sum_i w_i r_i
    SNIPS  = sum_i w_i r_i / sum_i w_i
    DR     = (1/n) sum_i [ sum_a pi(a|s_i) q(s_i, a) + w_i (r_i - q(s_i, a_i)) ]
    ESS    = (sum_i w_i)^2 / sum_i w_i^2

q is a reward model (``CandidateRewardModel``, cross-fitted so it never predicts on the
rows it was fitted on). Confidence intervals: percentile bootstrap over decisions.
These are per-decision (contextual-bandit) estimates; they do not see how a pick changes
later steps, which is what the simulator's 60-day outcomes add.
References: Horvitz & Thompson (1952); Swaminathan & Joachims (2015) for SNIPS;
Dudik, Langford & Li (2011) for DR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rl.decision.observation import ObservationLayout

if TYPE_CHECKING:
    from rl.feedback.offline_steps_files import LoggedDecisions


@dataclass(frozen=True)
class OPEEstimate:
    """One estimator's value with its bootstrap 95% interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    effective_sample_size: float
    n: int


def estimate_cell(estimate: OPEEstimate | None) -> str:
    """A report cell for an estimate: value [95% interval], or "-" when there is none."""
    if estimate is None:
        return "-"
    return f"{estimate.value:.4f} [{estimate.ci_low:.4f}, {estimate.ci_high:.4f}]"


def importance_weights(
    target_probs: np.ndarray,  # (B, K) pi(.|s)
    actions: np.ndarray,  # (B,)
    behaviour_probs: np.ndarray,  # (B,) pi_b(a|s)
) -> np.ndarray:
    picked = np.asarray(target_probs, np.float64)[np.arange(len(actions)), actions]
    behaviour = np.asarray(behaviour_probs, np.float64)
    if np.any(behaviour <= 0):
        raise ValueError(
            "behaviour propensities must be > 0 (log the exploring policy's probability)"
        )
    return picked / behaviour


def effective_sample_size(weights: np.ndarray) -> float:
    total_sq = float(np.sum(weights**2))
    return float(np.sum(weights) ** 2 / total_sq) if total_sq > 0 else 0.0


def _bootstrap(
    statistic_terms: tuple[np.ndarray, ...],
    statistic: str,
    n_bootstrap: int,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Percentile 95% interval of a mean or ratio-of-sums over resampled rows."""
    n = len(statistic_terms[0])
    values = []
    chunk = max(1, min(n_bootstrap, 20_000_000 // max(n, 1)))
    done = 0
    while done < n_bootstrap:
        size = min(chunk, n_bootstrap - done)
        rows = rng.integers(0, n, size=(size, n))
        if statistic == "mean":
            values.append(statistic_terms[0][rows].mean(axis=1))
        else:  # ratio of sums
            values.append(
                statistic_terms[0][rows].sum(axis=1) / statistic_terms[1][rows].sum(axis=1)
            )
        done += size
    low, high = np.percentile(np.concatenate(values), [2.5, 97.5])
    return float(low), float(high)


def ips(target_probs, actions, behaviour_probs, rewards, n_bootstrap=1000, seed=0) -> OPEEstimate:
    weights = importance_weights(target_probs, actions, behaviour_probs)
    terms = weights * np.asarray(rewards, np.float64)
    low, high = _bootstrap((terms,), "mean", n_bootstrap, np.random.default_rng(seed))
    return OPEEstimate(
        "IPS", float(terms.mean()), low, high, effective_sample_size(weights), len(terms)
    )


def snips(target_probs, actions, behaviour_probs, rewards, n_bootstrap=1000, seed=0) -> OPEEstimate:
    weights = importance_weights(target_probs, actions, behaviour_probs)
    terms = weights * np.asarray(rewards, np.float64)
    low, high = _bootstrap((terms, weights), "ratio", n_bootstrap, np.random.default_rng(seed))
    return OPEEstimate(
        "SNIPS",
        float(terms.sum() / weights.sum()),
        low,
        high,
        effective_sample_size(weights),
        len(terms),
    )


def doubly_robust(
    target_probs, actions, behaviour_probs, rewards, predicted_rewards, n_bootstrap=1000, seed=0
) -> OPEEstimate:
    """``predicted_rewards`` (B, K): q(s_i, a) for every candidate a."""
    target_probs = np.asarray(target_probs, np.float64)
    predicted = np.asarray(predicted_rewards, np.float64)
    weights = importance_weights(target_probs, actions, behaviour_probs)
    direct = (target_probs * predicted).sum(axis=1)
    residual = np.asarray(rewards, np.float64) - predicted[np.arange(len(actions)), actions]
    terms = direct + weights * residual
    low, high = _bootstrap((terms,), "mean", n_bootstrap, np.random.default_rng(seed))
    return OPEEstimate(
        "DR", float(terms.mean()), low, high, effective_sample_size(weights), len(terms)
    )


class CandidateRewardModel:
    """q(s, a): ridge regression of the reward on per-candidate features.

    Features of candidate a in state s: the state part of the observation, the
    candidate's latent and relationship state, the products taste*latent and
    current*latent (affinity terms a linear model cannot form itself), and the candidate's
    song features when the layout carries them.
    """

    def __init__(self, layout: ObservationLayout, alpha: float = 1.0) -> None:
        self.layout = layout
        self.alpha = alpha

    def features(self, obs: np.ndarray) -> np.ndarray:
        """(B, size) -> (B, K, F)."""
        parts = self.layout.split(np.asarray(obs, np.float32))
        k = self.layout.k
        state = np.concatenate([parts["current_latent"], parts["user_taste"], parts["context"]], 1)
        latents = parts["candidate_latents"]
        return np.concatenate(
            [
                np.repeat(state[:, None, :], k, axis=1),
                latents,
                parts["candidate_relationship"],
                latents * parts["user_taste"][:, None, :],
                latents * parts["current_latent"][:, None, :],
                parts["candidate_song_features"],  # (B, K, F), F = 0 without a song table
            ],
            axis=2,
        )

    def fit(
        self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray
    ) -> CandidateRewardModel:
        chosen = self.features(obs)[np.arange(len(actions)), actions]
        from sklearn.linear_model import Ridge  # here: a second of import for every command

        self.regressor_ = Ridge(alpha=self.alpha).fit(chosen, rewards)
        return self

    def predict_all(self, obs: np.ndarray) -> np.ndarray:
        """(B, size) -> (B, K) predicted rewards."""
        feats = self.features(obs)
        b, k, f = feats.shape
        return self.regressor_.predict(feats.reshape(b * k, f)).reshape(b, k)


def cross_fitted_rewards(
    layout: ObservationLayout, obs, actions, rewards, folds: int = 2, seed: int = 0
) -> np.ndarray:
    """(B, K) q-predictions where each row's model was fitted on the other folds."""
    n = len(actions)
    fold_of = np.random.default_rng(seed).integers(0, folds, n)
    predicted = np.zeros((n, layout.k))
    for fold in range(folds):
        held = fold_of == fold
        if not held.any() or held.all():
            continue
        model = CandidateRewardModel(layout).fit(obs[~held], actions[~held], rewards[~held])
        predicted[held] = model.predict_all(obs[held])
    return predicted


@dataclass(frozen=True)
class EstimatorInputs:
    """Logged decisions as the estimators read them: chosen indices, the behaviour
    policy's propensities (not their logs), rewards, and the cross-fitted reward model's
    prediction for every candidate (DR's baseline)."""

    actions: np.ndarray  # (B,) int64
    behaviour: np.ndarray  # (B,)
    rewards: np.ndarray  # (B,)
    predicted: np.ndarray  # (B, K)

    @classmethod
    def from_logged(
        cls, logged: LoggedDecisions, layout: ObservationLayout, seed: int = 0
    ) -> EstimatorInputs:
        actions = np.asarray(logged.actions, np.int64)
        rewards = np.asarray(logged.rewards, np.float64)
        return cls(
            actions=actions,
            behaviour=np.exp(np.asarray(logged.behaviour_logp, np.float64)),
            rewards=rewards,
            predicted=cross_fitted_rewards(layout, logged.obs, actions, rewards, seed=seed),
        )


def evaluate_policy_offline(
    target_probs: np.ndarray,
    logged: LoggedDecisions,
    layout: ObservationLayout,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> list[OPEEstimate]:
    """IPS, SNIPS and DR of ``target_probs`` on the ``logged`` decisions (obs, actions,
    behaviour_logp, rewards: rl.feedback.offline_steps_files.LoggedDecisions)."""
    d = EstimatorInputs.from_logged(logged, layout, seed)
    return [
        ips(target_probs, d.actions, d.behaviour, d.rewards, n_bootstrap, seed),
        snips(target_probs, d.actions, d.behaviour, d.rewards, n_bootstrap, seed),
        doubly_robust(
            target_probs, d.actions, d.behaviour, d.rewards, d.predicted, n_bootstrap, seed
        ),
    ]
