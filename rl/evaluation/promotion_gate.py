"""The gate before promotion: is the candidate no worse than production on held-out logs?

Where it sits: ``encore promote``, ``encore finetune --promote`` and ``encore loop`` call
``gate_promotion`` before moving the production pointer. Both policies are scored on the
same held-out logged decisions with the doubly-robust estimator (rl/evaluation/ope.py),
using one cross-fitted reward model q, so the difference of their per-decision DR terms

    Δ_i = Σ_a [π_c(a|s_i) − π_p(a|s_i)] q(s_i, a) + (w_c,i − w_p,i)(r_i − q(s_i, a_i))

is paired decision by decision; its mean is the estimated gain in reward per decision and
a percentile bootstrap over decisions gives the 95% interval. The candidate is refused when
the estimated gain is below −margin (worse by more than the margin), unless forced. The
evidence (both estimates, the difference with its interval, the margin, the data) is
written into the candidate's manifest (``promotion_gate``) and shown by ``encore models``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rl.config_checks import require_at_least
from rl.decision.observation import ObservationLayout
from rl.evaluation.ope import EstimatorInputs, importance_weights

if TYPE_CHECKING:
    from rl.feedback.offline_steps_files import LoggedDecisions


@dataclass(frozen=True)
class GateConfig:
    """When a candidate may replace production."""

    margin: float = 0.01
    """Largest tolerated loss in estimated reward per decision (reward units). >= 0."""
    n_bootstrap: int = 500
    """Bootstrap resamples of the paired difference. >= 1."""
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least(self, 0, "margin")
        require_at_least(self, 1, "n_bootstrap")


@dataclass(frozen=True)
class GateEvidence:
    """The gate's decision and what it rests on (kept in the manifest)."""

    candidate: str
    production: str | None
    candidate_dr: float
    production_dr: float
    difference: float
    difference_ci: tuple[float, float]
    margin: float
    decisions: int
    passed: bool
    forced: bool = False
    data: str = ""

    @property
    def promoted(self) -> bool:
        return self.passed or self.forced

    def summary(self) -> str:
        low, high = self.difference_ci
        verdict = (
            "passed" if self.passed else ("FORCED past a refusal" if self.forced else "refused")
        )
        return (
            f"gate {verdict}: DR {self.candidate} {self.candidate_dr:.4f} vs "
            f"{self.production or 'production'} {self.production_dr:.4f}, difference "
            f"{self.difference:+.4f} [{low:+.4f}, {high:+.4f}] (margin {self.margin}) on "
            f"{self.decisions:,} held-out decisions"
        )

    def to_dict(self) -> dict[str, Any]:
        state = asdict(self)
        state["difference_ci"] = list(self.difference_ci)
        return state


def dr_terms(
    target_probs: np.ndarray,  # (B, K)
    actions: np.ndarray,  # (B,)
    behaviour_probs: np.ndarray,  # (B,)
    rewards: np.ndarray,  # (B,)
    predicted: np.ndarray,  # (B, K) q(s, a)
) -> np.ndarray:
    """(B,) per-decision doubly-robust terms; their mean is the DR estimate."""
    target_probs = np.asarray(target_probs, np.float64)
    weights = importance_weights(target_probs, actions, behaviour_probs)
    direct = (target_probs * predicted).sum(axis=1)
    residual = np.asarray(rewards, np.float64) - predicted[np.arange(len(actions)), actions]
    return direct + weights * residual


def paired_dr_difference(
    candidate_probs: np.ndarray,
    production_probs: np.ndarray,
    logged: LoggedDecisions,
    layout: ObservationLayout,
    n_bootstrap: int = 500,
    seed: int = 0,
) -> tuple[float, float, float, tuple[float, float]]:
    """(candidate DR, production DR, difference, 95% interval of the difference) on the
    ``logged`` decisions."""
    d = EstimatorInputs.from_logged(logged, layout, seed)
    candidate = dr_terms(candidate_probs, d.actions, d.behaviour, d.rewards, d.predicted)
    production = dr_terms(production_probs, d.actions, d.behaviour, d.rewards, d.predicted)
    delta = candidate - production
    rng = np.random.default_rng(seed)
    n = len(delta)
    draws = np.empty(n_bootstrap)
    chunk = max(1, 5_000_000 // max(n, 1))
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        draws[start : start + size] = delta[rng.integers(0, n, size=(size, n))].mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return (
        float(candidate.mean()),
        float(production.mean()),
        float(delta.mean()),
        (
            float(low),
            float(high),
        ),
    )


def gate_promotion(
    candidate_policy,
    production_policy,
    logged: LoggedDecisions,
    layout: ObservationLayout,
    candidate: str,
    production: str | None,
    config: GateConfig | None = None,
    force: bool = False,
    data: str = "",
) -> GateEvidence:
    """Score both policies on the held-out ``logged`` decisions and decide."""
    config = config or GateConfig()
    if len(logged.rewards) == 0:
        raise ValueError("the gate needs held-out logged decisions, got none")
    cand, prod, diff, ci = paired_dr_difference(
        candidate_policy.action_probabilities(logged.obs),
        production_policy.action_probabilities(logged.obs),
        logged,
        layout,
        config.n_bootstrap,
        config.seed,
    )
    return GateEvidence(
        candidate=candidate,
        production=production,
        candidate_dr=cand,
        production_dr=prod,
        difference=diff,
        difference_ci=ci,
        margin=config.margin,
        decisions=len(logged.rewards),
        passed=diff >= -config.margin,
        forced=force and diff < -config.margin,
        data=data,
    )


def gate_version(
    registry,  # rl.registry.ModelRegistry
    version: str,
    heldout_uri: str,
    config: GateConfig | None = None,
    force: bool = False,
) -> GateEvidence | None:
    """Gate registry ``version`` against production on the held-out offline steps at
    ``heldout_uri`` and record the evidence in its manifest; None when there is no
    production to compare with (the first promotion). Both run greedily: exploration is
    added on top of whichever is served, alike for both."""
    from rl.feedback.offline_steps_files import (
        parquet_files,
        read_logged_decisions,
        resolve_layout,
    )
    from rl.registry import PolicyScorer

    production = registry.production_version()
    if production is None or production == version:
        return None
    candidate = PolicyScorer.from_registry(registry, version, greedy=True)
    incumbent = PolicyScorer.from_registry(registry, production, greedy=True)
    layout = resolve_layout(heldout_uri, candidate.layout.without_song_features())
    logged = read_logged_decisions(parquet_files(heldout_uri), layout)
    evidence = gate_promotion(
        candidate, incumbent, logged, layout, version, production, config, force, heldout_uri
    )
    registry.annotate(version, "promotion_gate", evidence.to_dict())
    return evidence


def promote_through_gate(
    registry,  # rl.registry.ModelRegistry
    version: str,
    heldout_uri: str | None,
    margin: float = GateConfig().margin,
    force: bool = False,
    report=print,
) -> GateEvidence | None:
    """What ``encore promote`` and ``finetune --promote`` do: gate ``version`` against
    production on ``heldout_uri`` and promote it if it passes (or ``force``).

    Raises ``PermissionError`` with the reason when the gate refuses, or when there is a
    production version to compare with but no held-out data (and no ``force``)."""
    production = registry.production_version()
    evidence = None
    if production is not None and production != version:
        if heldout_uri is None:
            if not force:
                raise PermissionError(
                    f"the gate compares {version} with production {production} on held-out "
                    "offline steps: pass --heldout URI (or --force to promote without it)"
                )
            report(f"promoting {version} without the gate (--force, no held-out data)")
        else:
            evidence = gate_version(registry, version, heldout_uri, GateConfig(margin), force)
            assert evidence is not None
            report(evidence.summary())
            if not evidence.promoted:
                raise PermissionError(
                    f"the gate refused {version}: its DR estimate is "
                    f"{-evidence.difference:.4f} per decision below production's, more than "
                    f"the margin {margin} (pass --force to promote anyway)"
                )
    registry.promote(version)
    return evidence
