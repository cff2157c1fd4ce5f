"""Q-scorers: rank candidates by short-term clickiness times long-term stickiness.

Where it sits: the end of the long-term-value pipeline. It combines ``ClickinessModel``
(P(listen | rec)), ``StickinessModel`` (discovery stickiness vectors / shrunken means) and,
for items already heard, ``StateStickinessModel`` and an organic-listen model, into the
scores the simulated A/B test (``ab_test``) ranks by, and that the served Scorer can call
(``QScorer.score(CandidateBatch)`` is the plain-numpy API; ``QScoringPolicy`` wraps any
scorer as an ``rl.decision.policies.DecisionPolicy`` over the k candidates of an observation).

Scores (c = clickiness, u = taste, v_i stickiness vector, S_i unpersonalised stickiness):

    control          c                                  (the incumbent, myopic)
    personalised     c · (1 + ⟨u, v_i⟩)                 (paper eq. 16, discovery)
    unpersonalised   c · (1 + S_i)
    square-root      c · √S_i                            (√⟨u, v_i⟩ with personalised=True)
    resurfacing      [P(listen|rec) − P(org)] · [1 + S(s⁺,u,i) − S(s⁻,u,i)]   (Corollary 1)

with s⁺ = β s + (1 − β) and s⁻ = β s the next state after a listen / no listen, and
P(listen|rec) = P(org) + (1 − P(org)) · P(stream from rec) (eq. 18). For never-heard
items (s = 0) the resurfacing score reduces to the personalised discovery score when
P(org) ≈ 0 and S(s⁻ = 0) ≈ 0, which the paper rounds to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rl.decision.observation import ObservationLayout
from rl.decision.policies import candidate_mask, masked_softmax
from rl.decision.relationship_state import update_relationship_state
from rl.longterm.clickiness import ClickinessModel, clickiness_features
from rl.longterm.stickiness import StateStickinessModel, StickinessModel

if TYPE_CHECKING:
    from sklearn.neighbors import NearestNeighbors


SCORER_NAMES: tuple[str, ...] = ("control", "personalised", "unpersonalised", "square-root")
"""The paper's A/B arms (5.1.3), as ``LongTermModels.scorers()`` names them."""


@dataclass(frozen=True)
class CandidateBatch:
    """B decisions with K candidates each: everything a Q-scorer reads."""

    user_taste: np.ndarray  # (B, D)
    context: np.ndarray  # (B, C) encode_context(hour, weekday)
    candidate_items: np.ndarray  # (B, K) int64 catalog rows, -1 for padding
    candidate_latents: np.ndarray  # (B, K, D)
    candidate_relationship: np.ndarray  # (B, K, R)
    candidate_mask: np.ndarray  # (B, K) bool
    user_features: np.ndarray | None = None  # (B, F) stickiness features; None = user_taste

    @property
    def stickiness_features(self) -> np.ndarray:
        """What the stickiness models read as u (``taste.UserFeatures`` when given)."""
        return self.user_taste if self.user_features is None else self.user_features

    @property
    def shape(self) -> tuple[int, int]:
        return self.candidate_items.shape


class QScorer(Protocol):
    """Anything that scores the candidates of a batch (higher = recommend first)."""

    name: str

    def score(self, batch: CandidateBatch) -> np.ndarray:  # (B, K)
        ...


def clickiness_of(model: ClickinessModel, batch: CandidateBatch) -> np.ndarray:
    """(B, K) P(listen | rec) of every candidate."""
    features = clickiness_features(
        batch.user_taste[:, None, :],
        batch.candidate_latents,
        batch.context[:, None, :],
        batch.candidate_relationship,
        _item_logit(model, batch),
    )
    return model.predict_listen(features)


def _item_logit(model: ClickinessModel, batch: CandidateBatch) -> np.ndarray | None:
    item_logit = getattr(model, "item_logit_", None)
    if item_logit is None:
        return None
    return item_logit[np.clip(batch.candidate_items, 0, len(item_logit) - 1)]


def stream_probability(p_organic: np.ndarray, p_stream_from_rec: np.ndarray) -> np.ndarray:
    """Eq. 18: P(stream | rec) = P(org) + (1 − P(org)) · P(stream from rec)."""
    return p_organic + (1.0 - p_organic) * p_stream_from_rec


def corollary1_q(
    p_listen_given_rec: np.ndarray,
    p_organic: np.ndarray,
    stickiness_after_listen: np.ndarray,
    stickiness_after_no_listen: np.ndarray,
) -> np.ndarray:
    """Corollary 1: [P(listen|rec) − P(org)] · [1 + S(s⁺) − S(s⁻)] (binary-day reward).

    The first factor is the recommendation's causal lift on today's listen (clipped at 0:
    a recommendation cannot make a listen less likely in this model); the 1 is today's
    active day, S(s⁺) − S(s⁻) the return days it adds by moving the relationship state.
    """
    lift = np.clip(np.asarray(p_listen_given_rec) - np.asarray(p_organic), 0.0, None)
    return lift * (
        1.0 + np.asarray(stickiness_after_listen) - np.asarray(stickiness_after_no_listen)
    )


class ControlScorer:
    """The incumbent: rank by P(listen | rec) alone."""

    def __init__(self, clickiness: ClickinessModel, name: str = "control") -> None:
        self.clickiness = clickiness
        self.name = name

    def score(self, batch: CandidateBatch) -> np.ndarray:
        return clickiness_of(self.clickiness, batch)


class _ReturnDaysScorer:
    """A scorer built on a candidate's predicted return days: ⟨u, v_i⟩ from the user's
    stickiness features (``personalised``) or S_i, the item's shrunken mean; scores
    c · (1 + return days), the first-listen day plus the days the user comes back."""

    personalised: bool = True
    default_name: str = ""

    def __init__(
        self, clickiness: ClickinessModel, stickiness: StickinessModel, name: str | None = None
    ) -> None:
        self.clickiness = clickiness
        self.stickiness = stickiness
        self.name = name or self.default_name

    def expected_return_days(self, batch: CandidateBatch) -> np.ndarray:
        if self.personalised:
            return self.stickiness.predict(batch.stickiness_features, batch.candidate_items)
        return self.stickiness.predict_unpersonalised(batch.candidate_items)

    def score(self, batch: CandidateBatch) -> np.ndarray:
        return clickiness_of(self.clickiness, batch) * (1.0 + self.expected_return_days(batch))


class PersonalisedScorer(_ReturnDaysScorer):
    """Paper eq. 16: c · (1 + ⟨u, v_i⟩), the first-listen day plus expected return days."""

    default_name = "personalised"


class UnpersonalisedScorer(_ReturnDaysScorer):
    """c · (1 + S_i) with S_i the item's shrunken mean return days."""

    personalised = False
    default_name = "unpersonalised"


class SquareRootScorer(_ReturnDaysScorer):
    """c · √S: de-emphasises stickiness differences (S_i, or ⟨u, v_i⟩ with ``personalised``)."""

    default_name = "square-root"

    def __init__(
        self,
        clickiness: ClickinessModel,
        stickiness: StickinessModel,
        personalised: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(clickiness, stickiness, name)
        self.personalised = personalised

    def score(self, batch: CandidateBatch) -> np.ndarray:
        return clickiness_of(self.clickiness, batch) * np.sqrt(self.expected_return_days(batch))


class ResurfacingScorer:
    """General Corollary 1 score for heard and unheard items alike.

    Never-heard candidates (s = 0): S(s⁺) from the discovery stickiness vectors and
    S(s⁻) = S(0) = 0, as the paper rounds it. Heard candidates: S from ``state_stickiness``
    at s⁺ = β s + (1 − β) and s⁻ = β s. P(org) from ``organic`` (a ``ClickinessModel``
    trained on organic listens with zero context) or 0 when not given.
    """

    def __init__(
        self,
        clickiness: ClickinessModel,
        stickiness: StickinessModel,
        betas: tuple[float, ...],
        state_stickiness: StateStickinessModel | None = None,
        organic: ClickinessModel | None = None,
        name: str = "resurfacing",
    ) -> None:
        self.clickiness = clickiness
        self.stickiness = stickiness
        self.betas = np.asarray(betas, np.float32)
        self.state_stickiness = state_stickiness
        self.organic = organic
        self.name = name

    def organic_probability(self, batch: CandidateBatch) -> np.ndarray:
        if self.organic is None:
            return np.zeros(batch.shape)
        features = clickiness_features(
            batch.user_taste[:, None, :],
            batch.candidate_latents,
            np.zeros_like(batch.context)[:, None, :],
            batch.candidate_relationship,
            _item_logit(self.organic, batch),
        )
        return self.organic.predict_listen(features)

    def stickiness_gain(self, batch: CandidateBatch) -> tuple[np.ndarray, np.ndarray]:
        """(S(s⁺), S(s⁻)), each (B, K)."""
        state = np.asarray(batch.candidate_relationship, np.float32)
        heard = state.max(axis=-1) > 0
        after_listen = np.zeros(batch.shape)
        after_no_listen = np.zeros(batch.shape)
        discovery = self.stickiness.predict(batch.stickiness_features, batch.candidate_items)
        after_listen[~heard] = discovery[~heard]
        if heard.any():
            s_plus = update_relationship_state(state, np.ones(batch.shape, bool), self.betas)
            s_minus = update_relationship_state(state, np.zeros(batch.shape, bool), self.betas)
            if self.state_stickiness is not None:
                plus = self.state_stickiness.predict(
                    s_plus, batch.stickiness_features, batch.candidate_items
                )
                minus = self.state_stickiness.predict(
                    s_minus, batch.stickiness_features, batch.candidate_items
                )
            else:  # no state model: treat a heard item like a fresh discovery (no extra gain)
                plus, minus = discovery, np.zeros(batch.shape)
            after_listen[heard] = plus[heard]
            after_no_listen[heard] = minus[heard]
        return after_listen, after_no_listen

    def score(self, batch: CandidateBatch) -> np.ndarray:
        p_rec = clickiness_of(self.clickiness, batch)
        p_org = self.organic_probability(batch)
        after_listen, after_no_listen = self.stickiness_gain(batch)
        return corollary1_q(p_rec, p_org, after_listen, after_no_listen)


# ---------------------------------------------------------------------------------------
# DecisionPolicy face
# ---------------------------------------------------------------------------------------
class LatentItemLookup:
    """Maps candidate latents from an observation back to catalog rows.

    The observation carries candidate latents, not ids; stickiness is per item. Exact
    float32 matches are looked up in a dict; anything else (e.g. a re-encoded song) goes
    to its nearest catalog latent.
    """

    def __init__(self, latents: np.ndarray) -> None:
        self.latents = np.ascontiguousarray(latents, dtype=np.float32)
        self._row_of = {row.tobytes(): index for index, row in enumerate(self.latents)}
        self._nearest: NearestNeighbors | None = None  # built on the first miss

    def rows(self, candidate_latents: np.ndarray) -> np.ndarray:
        """(..., D) -> (...) int64 catalog rows."""
        flat = np.ascontiguousarray(candidate_latents, dtype=np.float32).reshape(
            -1, self.latents.shape[1]
        )
        rows = np.array([self._row_of.get(vector.tobytes(), -1) for vector in flat], np.int64)
        missing = rows < 0
        if missing.any():
            if self._nearest is None:
                from sklearn.neighbors import NearestNeighbors

                self._nearest = NearestNeighbors(n_neighbors=1).fit(self.latents)
            rows[missing] = self._nearest.kneighbors(flat[missing], return_distance=False)[:, 0]
        return rows.reshape(np.shape(candidate_latents)[:-1])


def batch_from_observations(
    obs: np.ndarray, layout: ObservationLayout, lookup: LatentItemLookup
) -> CandidateBatch:
    """Split (B, layout.size) observations into a ``CandidateBatch``."""
    parts = layout.split(np.asarray(obs, np.float32))
    mask = candidate_mask(np.asarray(obs), layout)
    items = lookup.rows(parts["candidate_latents"])
    return CandidateBatch(
        user_taste=parts["user_taste"],
        context=parts["context"],
        candidate_items=np.where(mask, items, -1),
        candidate_latents=parts["candidate_latents"],
        candidate_relationship=parts["candidate_relationship"],
        candidate_mask=mask,
    )


def greedy_probabilities(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One-hot argmax over valid candidates; ties share the mass equally."""
    masked = np.where(mask, scores, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    top = mask & (masked >= best)
    counts = top.sum(axis=1, keepdims=True)
    uniform = np.full(scores.shape, 1.0 / scores.shape[1])
    return np.where(counts > 0, top / np.maximum(counts, 1), uniform)


class QScoringPolicy:
    """Any ``QScorer`` as a ``DecisionPolicy`` over the k candidates of an observation.

    Parameters
    ----------
    scorer : the Q-scorer.
    layout : the observation layout.
    item_latents : (N, D) catalog latents (to recover candidate identities).
    temperature : 0 = greedy argmax (the paper's policies); > 0 = softmax over
        log-scores / temperature, so logged propensities stay non-zero.
    """

    def __init__(
        self,
        scorer: QScorer,
        layout: ObservationLayout,
        item_latents: np.ndarray,
        temperature: float = 0.0,
    ) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.scorer = scorer
        self.layout = layout
        self.lookup = LatentItemLookup(item_latents)
        self.temperature = temperature
        self.name = f"q-{scorer.name}"

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        batch = batch_from_observations(obs, self.layout, self.lookup)
        scores = self.scorer.score(batch)
        if self.temperature == 0:
            return greedy_probabilities(scores, batch.candidate_mask)
        logits = np.log(np.maximum(scores, 1e-9)) / self.temperature
        return masked_softmax(logits, batch.candidate_mask)
