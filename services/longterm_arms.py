"""The hook for long-term arms: the stickiness Q-scorers (rl/longterm/) as served policies.

Where it sits: the Scorer deployment (services/scorer.py) calls ``build_longterm_arms``
when its config names a long-term log; each returned ``ServingPolicy`` becomes an A/B arm
(``q-control``, ``q-personalised``, ``q-unpersonalised``, ``q-square-root``) that
``ArmAssignment`` can send users to, next to ``production`` (PPO or the logging policy).
A Q-scorer is greedy in the paper; served, it ranks by a softmax over log-scores with a
``temperature`` > 0 so that every logged pick keeps a non-zero propensity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rl.observation import ObservationLayout
from services.scoring import ServingPolicy, check_policy


def build_longterm_arms(
    log_uri: str,
    track_ids: np.ndarray,
    latents: np.ndarray,
    layout: ObservationLayout,
    variants: Sequence[str] = ("personalised",),
    temperature: float = 0.5,
) -> dict[str, ServingPolicy]:
    """Fit the long-term models on ``log_uri`` and wrap the chosen scorers as arms."""
    from rl.longterm.pipeline import fit_longterm_models
    from rl.longterm.q_scoring import QScoringPolicy

    models = fit_longterm_models(log_uri, track_ids, latents, tuple(layout.betas))
    scorers = models.scorers()
    unknown = sorted(set(variants) - set(scorers))
    if unknown:
        raise ValueError(f"unknown long-term variant(s) {unknown}; known: {sorted(scorers)}")
    arms = {}
    for variant in variants:
        policy = QScoringPolicy(scorers[variant], layout, latents, temperature=temperature)
        check_policy(policy, layout)
        arms[f"q-{variant}"] = ServingPolicy(policy, version=f"longterm:{variant}")
    return arms
