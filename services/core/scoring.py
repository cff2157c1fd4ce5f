"""The Scorer's core: which policy answers, how it picks, and how a new version swaps in.

Where it sits: services/scorer.py is a thin Serve shell over ``ScoringCore``; the
in-process benchmark baseline uses the same class. Pure numpy/torch, no Ray Serve.

- ``ServingPolicy``: a ``DecisionPolicy`` (rl/decision/policies.py) with the version that answers.
- ``PolicySlot``: the active policy. Until the registry (rl/registry.py) has a production
  version it serves the logging policy; ``sync()`` follows the registry's production
  pointer. A new version is loaded *fully* and checked (checksums by the registry, the
  observation layout, a probe forward pass giving finite probabilities that sum to 1)
  before one assignment swaps it in; a version that fails is refused, the old one keeps
  serving, and the refusal is kept for ``/v1/models``.
- ``ArmAssignment``: a deterministic A/B split by user hash. Arms name policies:
  ``production`` (the slot), ``logging``, any extra ``DecisionPolicy`` given (the hook
  for the long-term Q-scorers, see services/core/longterm_arms.py), or a ``BlendArm``: the
  production policy and a Q-scorer combined per batch (``blend_probabilities``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rl.decision.observation import ObservationLayout
from rl.decision.policies import (
    DecisionPolicy,
    candidate_mask,
    epsilon_greedy,
    greedy_actions,
    masked_softmax,
    sample_actions,
)
from rl.hot_swap import HotSwapSlot

LOGGING_VERSION = "logging"
"""``model_version`` reported while no trained version is in production."""


@dataclass(frozen=True)
class ServingPolicy:
    """A policy ready to answer, and the version name reported with its answers."""

    policy: DecisionPolicy
    version: str
    loaded_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.policy.name

    def values(self, obs: np.ndarray) -> np.ndarray | None:
        value = getattr(self.policy, "value", None)
        return None if value is None else np.asarray(value(obs), np.float64)


def check_policy(policy: DecisionPolicy, layout: ObservationLayout) -> None:
    """Probe forward pass on a synthetic batch; raise ValueError when unusable."""
    policy_layout = getattr(policy, "layout", None)
    # A version with song features answers the served observation (it adds them itself).
    if policy_layout is not None and (
        policy_layout.without_song_features() != layout.without_song_features()
    ):
        raise ValueError(
            f"policy layout {policy_layout.to_dict()} differs from the served {layout.to_dict()}"
        )
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(3, layout.size)).astype(np.float32)
    probe[:, layout.size - layout.k :] = 1.0
    probe[2, layout.size - 1] = 0.0  # one padded candidate
    probabilities = np.asarray(policy.action_probabilities(probe))
    if probabilities.shape != (3, layout.k):
        raise ValueError(
            f"probabilities have shape {probabilities.shape}, expected (3, {layout.k})"
        )
    if not np.all(np.isfinite(probabilities)) or np.any(probabilities < 0):
        raise ValueError("probabilities are not finite and non-negative on a probe batch")
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probabilities do not sum to 1 on a probe batch")
    value = getattr(policy, "value", None)
    if value is not None and not np.all(np.isfinite(np.asarray(value(probe)))):
        raise ValueError("value is not finite on a probe batch")


def load_registry_policy(
    registry_uri: str, version: str, layout: ObservationLayout
) -> ServingPolicy:
    """Load, verify and probe a registry version (raises on any problem)."""
    from rl.registry import ModelRegistry, PolicyScorer

    registry = ModelRegistry(registry_uri)
    entry = registry.get(version)
    module = registry.load_module(version, expected_layout=layout)
    # The version's song table travels with its weights: one swap replaces both.
    scorer = PolicyScorer(
        module,
        name=f"{entry.algo}:{version}",
        song_features=registry.song_features_of(version, module.layout),
    )
    check_policy(scorer, layout)
    return ServingPolicy(scorer, version)


class PolicySlot(HotSwapSlot[ServingPolicy]):
    """The active policy of one Scorer replica, following the registry's production pointer.

    Parameters
    ----------
    layout : the observation layout served.
    fallback : what answers while no production version exists (the logging policy).
    registry_uri : the model registry, or None to serve ``fallback`` only.
    loader : (registry_uri, version, layout) -> ServingPolicy; raises to refuse.
    """

    def __init__(
        self,
        layout: ObservationLayout,
        fallback: ServingPolicy,
        registry_uri: str | None = None,
        loader: Callable[[str, str, ObservationLayout], ServingPolicy] = load_registry_policy,
    ) -> None:
        super().__init__(fallback)
        self.layout = layout
        self.registry_uri = registry_uri
        self.loader = loader

    def _production_pointer(self) -> dict[str, Any] | None:
        if self.registry_uri is None:
            return None
        from rl.registry import ModelRegistry

        return ModelRegistry(self.registry_uri).production_pointer()

    def _load(self, version: str) -> ServingPolicy:
        return self.loader(self.registry_uri or "", version, self.layout)


class ArmAssignment:
    """Deterministic A/B split: user id -> arm, by a hash bucket in [0, 1).

    ``weights`` maps arm names to shares (normalised); an empty mapping means no test,
    every user gets arm "" (served by production).
    """

    def __init__(self, weights: Mapping[str, float] | None = None, salt: str = "encore") -> None:
        weights = dict(weights or {})
        if any(not np.isfinite(w) or w < 0 for w in weights.values()):
            raise ValueError(f"arm weights must be finite and >= 0, got {weights}")
        if weights and sum(weights.values()) <= 0:
            raise ValueError(f"arm weights must not all be 0, got {weights}")
        total = sum(weights.values()) or 1.0
        self.arms = list(weights)
        self.bounds = np.cumsum([weights[arm] / total for arm in self.arms])
        self.salt = salt

    def __call__(self, user_id: str) -> str:
        if not self.arms:
            return ""
        digest = hashlib.sha256(f"{self.salt}:{user_id}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") / 2**64
        index = int(np.searchsorted(self.bounds, bucket, side="right"))
        return self.arms[min(index, len(self.arms) - 1)]


BLEND_PROBABILITY_FLOOR = 1e-12
"""Probabilities below this are raised to it before the blend's logs are taken: a
candidate one policy all but rules out keeps a tiny, finite propensity instead of -inf."""


def blend_probabilities(
    production: np.ndarray,  # (B, K) pi_production, rows sum to 1 over the mask
    longterm: np.ndarray,  # (B, K) q, the Q-scorer's softmax
    mask: np.ndarray,  # (B, K) bool, real candidates
    weight: float,
) -> np.ndarray:
    """(B, K) geometric blend p proportional to pi^(1 - w) * q^w over the valid candidates.

    Why geometric and not the linear mixture (1 - w) pi + w q: the blend must *rank* by a
    configured mix of the two policies' scores. In log space this one is exactly that,
    log p = (1 - w) log pi + w log q + const, so a greedy pick maximises the weighted
    log-scores and w moves the ranking smoothly from production (w = 0) to the Q-scorer
    (w = 1). A linear mixture's argmax instead follows whichever policy is more peaked
    (at w = 0.5 a near one-hot Q-scorer dictates every greedy pick). It is also the
    distribution minimising (1 - w) KL(p || pi) + w KL(p || q). Both inputs give every
    valid candidate a non-zero probability (softmaxes), so p does too: the propensity of
    any pick is finite and logged traffic stays valid for off-policy training.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend weight must be in [0, 1], got {weight}")
    log_production = np.log(np.maximum(np.asarray(production, np.float64), BLEND_PROBABILITY_FLOOR))
    log_longterm = np.log(np.maximum(np.asarray(longterm, np.float64), BLEND_PROBABILITY_FLOOR))
    return masked_softmax((1.0 - weight) * log_production + weight * log_longterm, mask)


@dataclass(frozen=True)
class BlendArm:
    """An arm ranking by the production policy blended with a long-term Q-scorer."""

    longterm: ServingPolicy
    """The Q-scorer's policy (services/core/longterm_arms.py)."""
    weight: float
    """w in [0, 1]: 0 = production alone, 1 = the Q-scorer alone."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:  # also refuses NaN
            raise ValueError(f"blend weight must be in [0, 1], got {self.weight}")

    def with_production(
        self, production: ServingPolicy, layout: ObservationLayout
    ) -> ServingPolicy:
        """The blend over one production version, reporting both versions it answers with."""
        policy = BlendedPolicy(production.policy, self.longterm.policy, self.weight, layout)
        return ServingPolicy(
            policy,
            version=f"blend:{production.version}+{self.longterm.version}@w={self.weight:g}",
            loaded_at=max(production.loaded_at, self.longterm.loaded_at),
        )


class BlendedPolicy:
    """``blend_probabilities`` of two ``DecisionPolicy``s as a ``DecisionPolicy``.

    No ``value``: the production critic estimates V of the production policy, not of
    the blend, so blend answers report none rather than a wrong one.
    """

    def __init__(
        self,
        production: DecisionPolicy,
        longterm: DecisionPolicy,
        weight: float,
        layout: ObservationLayout,
    ) -> None:
        self.production = production
        self.longterm = longterm
        self.weight = float(weight)
        self.layout = layout
        self.name = f"blend({production.name},{longterm.name},w={self.weight:g})"

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        return blend_probabilities(
            np.asarray(self.production.action_probabilities(obs)),
            np.asarray(self.longterm.action_probabilities(obs)),
            candidate_mask(obs, self.layout),
            self.weight,
        )


@dataclass(frozen=True)
class ScoredBatch:
    probabilities: np.ndarray  # (B, K)
    values: list[float | None]  # (B,)
    chosen: np.ndarray  # (B,) int64 slot of the pick
    logp: np.ndarray  # (B,) float32 log-propensity of the pick
    versions: list[str]
    policies: list[str]


class ScoringCore:
    """Scores a batch of observations with the policy of each row's arm and picks.

    Parameters
    ----------
    slot : the production policy (hot-swapped) and the logging fallback.
    extra_arms : arm name -> a fixed policy (the long-term Q-scorers).
    blend_arms : arm name -> a blend of whatever production serves with a Q-scorer.
    seed : of the sampled picks.
    epsilon : exploration of the default ``explore`` mode.
    """

    def __init__(
        self,
        slot: PolicySlot,
        extra_arms: Mapping[str, ServingPolicy] | None = None,
        seed: int | None = None,
        blend_arms: Mapping[str, BlendArm] | None = None,
        epsilon: float = 0.05,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.slot = slot
        self.extra_arms = dict(extra_arms or {})
        self.blend_arms = dict(blend_arms or {})
        self.rng = np.random.default_rng(seed)
        self.epsilon = float(epsilon)

    @property
    def arms(self) -> list[str]:
        """Every arm this core answers for."""
        return sorted({"production", "logging", *self.extra_arms, *self.blend_arms})

    def policy_for(self, arm: str) -> ServingPolicy:
        if arm in ("", "production"):
            return self.slot.active
        if arm == "logging":
            return self.slot.fallback
        if arm in self.extra_arms:
            return self.extra_arms[arm]
        if arm in self.blend_arms:
            # Built from the slot's active policy at call time (not a copy taken at
            # startup), so a blend follows every production hot-swap.
            return self.blend_arms[arm].with_production(self.slot.active, self.slot.layout)
        raise KeyError(f"unknown arm {arm!r}")

    def score(self, obs: np.ndarray, modes: list[str], arms: list[str]) -> ScoredBatch:
        obs = np.asarray(obs, np.float32)
        batch, k = len(obs), self.slot.layout.k
        probabilities = np.zeros((batch, k), np.float64)
        values: list[float | None] = [None] * batch
        versions, policies = [""] * batch, [""] * batch
        for arm in sorted(set(arms)):
            rows = np.flatnonzero(np.asarray(arms) == arm)
            serving = self.policy_for(arm)  # read once: a swap mid-batch cannot mix versions
            probabilities[rows] = serving.policy.action_probabilities(obs[rows])
            arm_values = serving.values(obs[rows])
            for position, row in enumerate(rows):
                versions[row], policies[row] = serving.version, serving.name
                values[row] = None if arm_values is None else float(arm_values[position])
        chosen = np.zeros(batch, np.int64)
        logp = np.zeros(batch, np.float32)
        modes_array = np.asarray(modes)
        greedy, sample = modes_array == "greedy", modes_array == "sample"
        explore = ~(greedy | sample)  # "explore", the default
        if greedy.any():
            chosen[greedy], logp[greedy] = greedy_actions(probabilities[greedy])
        if sample.any():
            chosen[sample], logp[sample] = sample_actions(probabilities[sample], self.rng)
        if explore.any():
            # Drawn from the epsilon-greedy distribution, so the logged propensity is exact;
            # the response still shows the policy's own probabilities.
            explored = epsilon_greedy(probabilities[explore], self.epsilon)
            chosen[explore], logp[explore] = sample_actions(explored, self.rng)
        return ScoredBatch(probabilities, values, chosen, logp, versions, policies)
