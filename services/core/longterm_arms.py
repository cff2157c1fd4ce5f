"""The hook for long-term arms: the stickiness Q-scorers (rl/longterm/) as served policies.

Where it sits: the Scorer deployment (services/scorer.py) calls ``build_longterm_arms``
when its config names a long-term log; each returned ``ServingPolicy`` becomes an A/B arm
(``q-control``, ``q-personalised``, ``q-unpersonalised``, ``q-square-root``) that
``ArmAssignment`` can send users to, next to ``production`` (PPO or the logging policy),
and the ``blend`` arm (services/core/scoring.py ``BlendArm``) mixes one of them with production.
A Q-scorer is greedy in the paper; served, it ranks by a softmax over log-scores with a
``temperature`` > 0 so that every logged pick keeps a non-zero propensity.

The observation carries the user's taste but none of the other user features the
stickiness models were fitted on (today the activity share, ``rl.longterm.taste.
UserFeatures``): the Scorer sees observations, not user ids. ``PopulationUserFeatures``
fills those columns with their mean over the discovery dataset the stickiness vectors
were fitted on, i.e. every served user is scored as a user of average activity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rl.decision.observation import ObservationLayout
from rl.longterm.q_scoring import SCORER_NAMES
from services.core.scoring import ServingPolicy, check_policy

if TYPE_CHECKING:
    from rl.longterm.fitted_models import LongTermModels
    from rl.longterm.q_scoring import CandidateBatch, QScorer

LONGTERM_VARIANTS: tuple[str, ...] = SCORER_NAMES
"""The paper's Q-scorers (``LongTermModels.scorers()``), servable as ``q-<variant>`` arms."""


class PopulationUserFeatures:
    """A ``QScorer`` whose batches get the stickiness user features the observation lacks.

    Parameters
    ----------
    scorer : the Q-scorer to delegate to.
    fill : (F,) values of the user features after the taste (their training mean).
    """

    def __init__(self, scorer: QScorer, fill: np.ndarray) -> None:
        self.scorer = scorer
        self.fill = np.asarray(fill, np.float32).reshape(-1)
        self.name = scorer.name

    def score(self, batch: CandidateBatch) -> np.ndarray:
        if batch.user_features is None and len(self.fill):
            taste = np.asarray(batch.user_taste, np.float32)
            extra = np.broadcast_to(self.fill, (len(taste), len(self.fill)))
            batch = replace(batch, user_features=np.concatenate([taste, extra], axis=1))
        return self.scorer.score(batch)


def population_user_features(models: LongTermModels, latent_dim: int) -> np.ndarray:
    """(F,) mean of the discovery dataset's user features beyond the ``latent_dim`` taste."""
    features = np.asarray(models.discoveries.taste, np.float64)
    return features[:, latent_dim:].mean(axis=0) if len(features) else np.zeros(0)


def build_longterm_arms(
    log_uri: str,
    track_ids: np.ndarray,
    latents: np.ndarray,
    layout: ObservationLayout,
    variants: Sequence[str] = ("personalised",),
    temperature: float = 0.5,
    model_config: Mapping[str, Any] | None = None,
    engine: str = "ray",
) -> dict[str, ServingPolicy]:
    """Fit the long-term models on ``log_uri`` and wrap the chosen scorers as arms.

    ``model_config``: overrides of ``rl.longterm.fitted_models.ModelConfig`` (e.g. the
    return horizon); ``engine``: how the log is read ("ray": Ray Data, "pyarrow").
    Returns ``{"q-<variant>": ServingPolicy}``, each probed with ``check_policy``.
    """
    from rl.longterm.fitted_models import ModelConfig, fit_longterm_models

    unknown = sorted(set(variants) - set(LONGTERM_VARIANTS))
    if unknown:
        raise ValueError(
            f"unknown long-term variant(s) {unknown}; known: {list(LONGTERM_VARIANTS)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for served arms, got {temperature}")
    models = fit_longterm_models(
        log_uri,
        track_ids,
        latents,
        tuple(layout.betas),
        ModelConfig(**dict(model_config or {})),
        engine=engine,
    )
    return longterm_arms_from_models(models, layout, variants, temperature)


def longterm_arms_from_models(
    models: LongTermModels,
    layout: ObservationLayout,
    variants: Sequence[str],
    temperature: float,
) -> dict[str, ServingPolicy]:
    """The fitted models' scorers as probed, servable ``q-<variant>`` arms."""
    from rl.longterm.q_scoring import QScoringPolicy

    scorers = models.scorers()
    fill = population_user_features(models, layout.latent_dim)
    arms = {}
    for variant in dict.fromkeys(variants):
        scorer = PopulationUserFeatures(scorers[variant], fill)
        policy = QScoringPolicy(scorer, layout, models.item_latents, temperature=temperature)
        check_policy(policy, layout)
        arms[f"q-{variant}"] = ServingPolicy(policy, version=f"longterm:{variant}")
    return arms
