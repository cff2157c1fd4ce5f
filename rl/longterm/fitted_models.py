"""Fit every long-term model from one feedback log: the trained bundle the scorers use.

Where it sits: between the log (written by the simulator or the service) and the
consumers of Q-scores (``ab_test``, ``encore ab-test``, the served Scorer). Steps:

1. listen days from the decision + organic log (Ray Data, ``log_prep``);
2. relationship states of every (user, item) pair (``RelationshipStateStore``);
3. taste: the logged user vectors by day (``LoggedTaste``), history EMA as fallback;
4. the discovery dataset and stickiness vectors / shrunken means (``stickiness``);
5. clickiness on logged impressions (``clickiness``), a random subsample if large.

``LongTermModels.scorers()`` returns the paper's four arms as ``QScorer``s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rl.config_checks import require_at_least, require_choice, require_positive
from rl.feedback.log import read_decisions_table
from rl.longterm.clickiness import ClickinessModel, impressions_from_decisions, item_listen_logits
from rl.longterm.listen_days import listen_days_from_log
from rl.longterm.q_scoring import (
    ControlScorer,
    PersonalisedScorer,
    QScorer,
    SquareRootScorer,
    UnpersonalisedScorer,
)
from rl.longterm.relationship_history import ListenDays, RelationshipStateStore
from rl.longterm.stickiness import DiscoveryDataset, StickinessModel, discovery_dataset
from rl.longterm.taste import ActivityModel, LoggedTaste, TasteModel, UserFeatures


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the long-term models."""

    horizon_days: int = 60
    """Return window of a discovery, in days (the paper's 60: the discovery day + 59)."""
    stickiness_l2: float = 20.0
    """λ of the stickiness regression toward the prior vector, in discoveries' worth. > 0."""
    mean_shrinkage: float = 20.0
    """κ, pseudo-count of the unpersonalised mean's prior. > 0."""
    taste_half_life_days: float = 60.0
    """Half-life of the history-based taste (fallback when no logged taste). > 0."""
    clickiness_hidden_units: int = 32
    """Hidden width of the clickiness MLP (0 = logistic regression). >= 0."""
    clickiness_epochs: int = 4
    """Passes over the logged impressions. >= 1."""
    max_impressions: int = 200_000
    """Impressions used to fit clickiness (random subsample above this). >= 100."""
    min_discovery_day: int = 0
    """Earliest first-listen day counted as a discovery (left censoring of the log). >= 0."""
    stickiness_taste_distance: bool = True
    """Add the taste-to-song distance to the stickiness features (``StickinessModel``): songs
    discovered in the log are near the listener's taste, songs recommended once (banner,
    shelf) often are not; without it predicted return days are ~1.5x too high there."""
    return_source: str = "organic"
    """Return days of the discovery dataset: "organic" (default; later recommendations earn
    their own credit) or "any" listen day (the literal count, ~1.5x higher in a log where
    the incumbent re-recommends songs near the taste). See ``stickiness.discovery_dataset``."""
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least(self, 2, "horizon_days")
        require_positive(self, "stickiness_l2", "mean_shrinkage", "taste_half_life_days")
        require_at_least(self, 0, "clickiness_hidden_units", "min_discovery_day")
        require_at_least(self, 1, "clickiness_epochs")
        require_at_least(self, 100, "max_impressions")
        require_choice(self, "return_source", ("any", "organic"))


@dataclass
class LongTermModels:
    """Everything fitted from one log; item codes are rows of ``track_ids`` (the catalog)."""

    track_ids: np.ndarray  # (N,)
    item_latents: np.ndarray  # (N, D)
    betas: tuple[float, ...]
    listen_days: ListenDays
    relationship: RelationshipStateStore
    taste: LoggedTaste
    user_features: UserFeatures  # [taste, activity share]: the stickiness models' u
    discoveries: DiscoveryDataset
    stickiness: StickinessModel
    clickiness: ClickinessModel
    n_impressions: int

    def scorers(self) -> dict[str, QScorer]:
        """The paper's A/B arms (5.1.3) by name."""
        return {
            "control": ControlScorer(self.clickiness),
            "personalised": PersonalisedScorer(self.clickiness, self.stickiness),
            "unpersonalised": UnpersonalisedScorer(self.clickiness, self.stickiness),
            "square-root": SquareRootScorer(self.clickiness, self.stickiness),
        }

    def summary(self) -> dict[str, float]:
        counts = self.stickiness.item_counts_
        return {
            "listen_days": len(self.listen_days),
            "relationship_pairs": len(self.relationship),
            "discoveries": len(self.discoveries),
            "items_with_discoveries": int((counts > 0).sum()),
            "median_discoveries_per_discovered_item": float(np.median(counts[counts > 0]))
            if (counts > 0).any()
            else 0.0,
            "mean_return_days": float(self.discoveries.return_days.mean())
            if len(self.discoveries)
            else 0.0,
            "impressions": self.n_impressions,
        }


def fit_longterm_models(
    log_uri: str,
    track_ids: np.ndarray,
    item_latents: np.ndarray,
    betas: tuple[float, ...],
    config: ModelConfig | None = None,
    track_minutes: dict[str, float] | None = None,
    item_groups: np.ndarray | None = None,
    end_day: int | None = None,
    engine: str = "ray",
) -> LongTermModels:
    """Fit the relationship store, taste, discovery dataset, stickiness and clickiness."""
    config = config or ModelConfig()
    track_ids = np.asarray(track_ids, dtype=object)
    listen_days = listen_days_from_log(
        log_uri, track_ids=track_ids, track_minutes=track_minutes, engine=engine
    )
    end = listen_days.end_day if end_day is None else end_day
    relationship = RelationshipStateStore.from_listen_days(listen_days, as_of_day=end, betas=betas)
    history_taste = TasteModel(config.taste_half_life_days).fit(listen_days, item_latents)

    decisions = read_decisions_table(log_uri, validate=False).select(
        ["user_id", "day", "hour", "weekday", "user_taste", "chosen_index", "chosen_track_id",
         "candidate_relationship", "listened"]
    ).to_pandas()  # fmt: skip
    taste = LoggedTaste(history_taste).fit_decisions(listen_days.user_ids, decisions)
    user_features = UserFeatures(taste, ActivityModel().fit(listen_days))
    discoveries = discovery_dataset(
        listen_days,
        user_features,
        config.horizon_days,
        end_day=end,
        min_discovery_day=config.min_discovery_day,
        return_source=config.return_source,
    )
    stickiness = StickinessModel(
        l2=config.stickiness_l2,
        mean_shrinkage=config.mean_shrinkage,
        horizon_days=config.horizon_days,
        taste_distance=config.stickiness_taste_distance,
    ).fit(
        discoveries.taste,
        discoveries.return_days,
        discoveries.item,
        len(track_ids),
        item_groups,
        item_latents=item_latents,
    )

    rng = np.random.default_rng(config.seed)
    if len(decisions) > config.max_impressions:
        decisions = decisions.iloc[
            np.sort(rng.choice(len(decisions), config.max_impressions, replace=False))
        ]
    shown = pd.Index(track_ids).get_indexer(decisions["chosen_track_id"].to_numpy())
    item_logit = item_listen_logits(
        shown[shown >= 0], decisions["listened"].to_numpy(bool)[shown >= 0], len(track_ids)
    )
    features, listened = impressions_from_decisions(
        decisions, item_latents, track_ids, len(betas), item_logit=item_logit
    )
    clickiness = ClickinessModel(
        hidden_units=config.clickiness_hidden_units,
        epochs=config.clickiness_epochs,
        seed=config.seed,
    ).fit(features, listened)
    clickiness.item_logit_ = item_logit
    return LongTermModels(
        track_ids=track_ids,
        item_latents=np.asarray(item_latents, np.float32),
        betas=tuple(betas),
        listen_days=listen_days,
        relationship=relationship,
        taste=taste,
        user_features=user_features,
        discoveries=discoveries,
        stickiness=stickiness,
        clickiness=clickiness,
        n_impressions=len(listened),
    )
