"""Decision policies: anything that turns observations into probabilities over k candidates.

Where it sits: the simulator asks a ``DecisionPolicy`` which candidate to play next, the
served Scorer asks one for the ranking, and off-policy evaluation compares them on logs.
The logging policy here, the trained PPO policy (an RLModule wrapper in rl/training/) and
the stickiness scorers (rl/longterm/) all meet the same protocol:

    action_probabilities(obs (B, layout.size)) -> (B, k) probabilities,
    0 where candidate_mask == 0, each row summing to 1; plus a ``name``.

A greedy pick is the argmax, a sampled pick a draw; the probability of the pick is the
propensity logged as ``behaviour_logp`` (its log).

``MyopicListenPolicy`` is the incumbent logging policy: it ranks candidates by a predicted
listen probability computed from the observation alone (taste/current/candidate latents
and the relationship state), then explores with a softmax temperature and an epsilon
floor, so every candidate has a known, non-zero propensity.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from rl.decision.observation import ObservationLayout


@runtime_checkable
class DecisionPolicy(Protocol):
    """A policy over the k kNN candidates of the current song."""

    name: str

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        """(B, layout.size) observations -> (B, k) probabilities (masked, rows sum to 1)."""
        ...


def candidate_mask(obs: np.ndarray, layout: ObservationLayout) -> np.ndarray:
    """(B, k) bool: which candidate slots hold a real candidate."""
    start = layout.mask_offset
    return np.asarray(obs[:, start : start + layout.k]) > 0.5


def masked_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the True entries of ``mask``; rows with no True get uniform."""
    logits = np.where(mask, logits, -np.inf)
    peak = np.max(logits, axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    weights = np.where(mask, np.exp(logits - peak), 0.0)
    total = weights.sum(axis=1, keepdims=True)
    uniform = np.full_like(weights, 1.0 / weights.shape[1])
    return np.where(total > 0, weights / np.where(total > 0, total, 1.0), uniform)


def sample_actions(
    probabilities: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one index per row; returns (B,) int64 actions and (B,) float32 log-propensities."""
    cumulative = np.cumsum(probabilities, axis=1)
    draws = rng.random(len(probabilities))[:, None] * cumulative[:, -1:]
    actions = np.minimum((draws >= cumulative).sum(axis=1), probabilities.shape[1] - 1)
    # Never land on a zero-probability slot through float round-off at the row's end.
    picked = probabilities[np.arange(len(actions)), actions]
    bad = picked <= 0
    if np.any(bad):
        actions[bad] = np.argmax(probabilities[bad], axis=1)
        picked = probabilities[np.arange(len(actions)), actions]
    return actions.astype(np.int64), np.log(picked).astype(np.float32)


def greedy_actions(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax per row; returns (B,) actions and the (B,) log-probabilities of those picks."""
    actions = np.argmax(probabilities, axis=1)
    picked = probabilities[np.arange(len(actions)), actions]
    return actions.astype(np.int64), np.log(picked).astype(np.float32)


class ListenProbabilityModel:
    """Predicted P(listen | candidate) from the observation alone (a logistic model).

    Features per candidate: squared distance taste-to-candidate and current-to-candidate
    (both divided by ``latent_scale``^2), and the user's relationship state with the
    candidate (one per forgetting factor). Defaults are an analytic prior (closer to the
    taste is better, familiar songs are played more); ``fit`` replaces them with a logistic
    regression on logged decisions (the chosen candidate's features -> listened).

    Parameters
    ----------
    layout : the observation layout.
    latent_scale : typical latent distance (``latent_scale_of(latents)``), so the
        coefficients do not depend on the VAE's units.
    """

    def __init__(self, layout: ObservationLayout, latent_scale: float = 1.0) -> None:
        if not latent_scale > 0:
            raise ValueError(f"latent_scale must be > 0, got {latent_scale}")
        self.layout = layout
        self.latent_scale = float(latent_scale)
        # Analytic prior: [taste distance, current distance, relationship per beta].
        self.coef_ = np.array([-2.0, -0.5] + [0.0] * (layout.n_betas - 1) + [1.5], dtype=np.float64)
        self.intercept_ = 1.0

    def features(self, obs: np.ndarray) -> np.ndarray:
        """(B, size) -> (B, k, 2 + R) per-candidate features."""
        parts = self.layout.split(np.asarray(obs, np.float32))
        candidates = parts["candidate_latents"]  # (B, K, D)
        scale2 = self.latent_scale**2
        taste_d2 = ((candidates - parts["user_taste"][:, None, :]) ** 2).sum(-1) / scale2
        current_d2 = ((candidates - parts["current_latent"][:, None, :]) ** 2).sum(-1) / scale2
        return np.concatenate(
            [taste_d2[..., None], current_d2[..., None], parts["candidate_relationship"]], axis=-1
        )

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """(B, size) -> (B, k) listen logits."""
        return self.features(obs) @ self.coef_ + self.intercept_

    def predict_proba(self, obs: np.ndarray) -> np.ndarray:
        """(B, size) -> (B, k) predicted listen probabilities."""
        return 1.0 / (1.0 + np.exp(-self.logits(obs)))

    def fit(
        self, obs: np.ndarray, chosen_index: np.ndarray, listened: np.ndarray
    ) -> ListenProbabilityModel:
        """Logistic regression of ``listened`` on the chosen candidate's features."""
        from sklearn.linear_model import LogisticRegression

        features = self.features(obs)[np.arange(len(obs)), np.asarray(chosen_index)]
        regression = LogisticRegression(C=10.0, max_iter=500).fit(features, np.asarray(listened))
        self.coef_ = regression.coef_[0].astype(np.float64)
        self.intercept_ = float(regression.intercept_[0])
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout.to_dict(),
            "latent_scale": self.latent_scale,
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ListenProbabilityModel:
        model = cls(ObservationLayout.from_dict(state["layout"]), float(state["latent_scale"]))
        model.coef_ = np.asarray(state["coef"], np.float64)
        model.intercept_ = float(state["intercept"])
        return model


def latent_scale_of(latents: np.ndarray) -> float:
    """Typical spread of song latents: sqrt of the total variance (> 0)."""
    total_variance = float(np.asarray(latents, np.float64).var(axis=0).sum())
    return max(np.sqrt(total_variance), 1e-6)


class MyopicListenPolicy:
    """The incumbent logging policy: softmax over predicted listen logits, epsilon floor.

    pi(a | obs) = (1 - epsilon) * softmax(logit P(listen | a) / temperature) + epsilon / n_valid
    over the valid candidates. temperature -> 0 and epsilon = 0 is the greedy myopic policy.
    """

    def __init__(
        self,
        listen_model: ListenProbabilityModel,
        temperature: float = 0.5,
        epsilon: float = 0.1,
        name: str = "myopic-listen",
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.listen_model = listen_model
        self.layout = listen_model.layout
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.name = name

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        mask = candidate_mask(obs, self.layout)
        exploit = masked_softmax(self.listen_model.logits(obs) / self.temperature, mask)
        valid = mask.sum(axis=1, keepdims=True)
        explore = np.where(mask, 1.0 / np.maximum(valid, 1), 0.0)
        explore = np.where(valid > 0, explore, 1.0 / self.layout.k)
        return (1.0 - self.epsilon) * exploit + self.epsilon * explore

    def to_dict(self) -> dict[str, Any]:
        return {
            "listen_model": self.listen_model.to_dict(),
            "temperature": self.temperature,
            "epsilon": self.epsilon,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> MyopicListenPolicy:
        return cls(
            ListenProbabilityModel.from_dict(state["listen_model"]),
            temperature=float(state["temperature"]),
            epsilon=float(state["epsilon"]),
            name=str(state.get("name", "myopic-listen")),
        )


class UniformRandomPolicy:
    """Uniform over the valid candidates: the fully exploring baseline."""

    def __init__(self, layout: ObservationLayout, name: str = "uniform-random") -> None:
        self.layout = layout
        self.name = name

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        mask = candidate_mask(np.asarray(obs), self.layout)
        return masked_softmax(np.zeros(mask.shape), mask)


class EpsilonGreedyPolicy:
    """The served default: the greedy pick of a learned policy with a small exploration.

    pi(a | s) = (1 - epsilon) * 1{a = argmax base(. | s)} + epsilon / n_valid(s)

    over the valid candidates (ties of the base policy share the greedy mass). Every valid
    candidate keeps a propensity >= epsilon / k, which is exactly what the simulator and the
    Scorer log as ``behaviour_logp`` when they draw from these probabilities, so the next
    round's off-policy estimates and training can weight logged decisions correctly --
    without sampling a near-uniform policy that wastes listeners.
    """

    def __init__(self, base: DecisionPolicy, epsilon: float = 0.05, name: str | None = None):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.base = base
        self.epsilon = float(epsilon)
        self.layout: ObservationLayout | None = getattr(base, "layout", None)
        self.name = name or f"{base.name} (greedy, epsilon {self.epsilon:g})"
        if hasattr(base, "value"):  # the Scorer reports V(s) of policies that have one
            self.value = base.value

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        base = np.asarray(self.base.action_probabilities(obs), np.float64)
        valid = None if self.layout is None else candidate_mask(np.asarray(obs), self.layout)
        return epsilon_greedy(base, self.epsilon, valid)


def epsilon_greedy(
    probabilities: np.ndarray, epsilon: float, valid: np.ndarray | None = None
) -> np.ndarray:
    """(B, K) policy probabilities -> (1 - epsilon) on the most probable valid candidate (ties
    share it) + epsilon spread evenly over the valid candidates (default: probability > 0).
    The simulator's ``EpsilonGreedyPolicy`` and the served ``explore`` mode both use it."""
    probabilities = np.asarray(probabilities, np.float64)
    valid = probabilities > 0 if valid is None else np.asarray(valid, bool)
    valid = valid | ~valid.any(axis=1, keepdims=True)
    masked = np.where(valid, probabilities, -np.inf)
    top = valid & (masked >= masked.max(axis=1, keepdims=True))
    greedy = top / top.sum(axis=1, keepdims=True)
    explore = valid / valid.sum(axis=1, keepdims=True)
    return (1.0 - epsilon) * greedy + epsilon * explore
