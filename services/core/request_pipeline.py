"""One recommendation, end to end: song -> latent -> kNN candidates -> observation -> pick.

Where it sits: the ingress deployment (services/ingress.py) runs this with the Embedder,
Retriever and Scorer as remote ``DeploymentHandle`` calls; the in-process benchmark
baseline runs it with the same cores called locally. Everything is batched: the ingress
gathers concurrent requests (``@serve.batch``) so each hop is paid once per batch, not
once per request. Cheap steps stay here, so most requests make one hop (the Scorer): a
catalog track's latent is a table lookup (the Embedder is only called for raw features),
its candidates come from a precomputed neighbour table (services/core/neighbour_cache.py; the
Retriever is only called for raw features or exclude lists the table cannot answer), and
the user state and pending decisions are in a ``UserStore`` (services/core/user_state.py:
this process's memory, or Redis shared by every ingress replica).

Errors that are the caller's fault raise ``ServiceError`` subclasses carrying the HTTP
status, the offending field and a message; the transports map them to 404/422 (HTTP) or
NOT_FOUND/INVALID_ARGUMENT (gRPC).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from rl.decision.observation import ObservationLayout
from rl.feedback.reward import RewardConfig, compute_reward
from services.core.catalog_table import CatalogTable
from services.core.decision_log_row import decision_row
from services.core.feedback_journal import FeedbackSink
from services.core.neighbour_cache import NeighbourCache
from services.core.observer import PipelineObserver
from services.core.scoring import ArmAssignment, ScoredBatch
from services.core.served_pool import ServedCandidatePool
from services.core.service_errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ServiceError,
)
from services.core.user_state import (
    DecisionContext,
    PendingDecision,
    UserStore,
    build_observations,
    day_of,
    hour_and_weekday,
    listened_from,
)

__all__ = [
    "ConflictError",
    "InvalidInputError",
    "NotFoundError",
    "RecommendationPipeline",
    "ServiceError",
    "decision_row",
]
from services.schemas import (
    Candidate,
    FeedbackRequest,
    FeedbackResponse,
    RecommendRequest,
    RecommendResponse,
)


@dataclass(frozen=True)
class _Candidates:
    """One request's retrieved candidates and their observation parts."""

    track_ids: list[str]
    distances: list[float]
    latents: np.ndarray  # (K, D)
    relationship: np.ndarray  # (K, R)
    sources: list[str] | None  # each candidate's pool source (None: today's kNN pool)


EmbedFn = Callable[[np.ndarray], Awaitable[np.ndarray]]
"""(B, 11) raw features -> (B, D) latents."""
RetrieveFn = Callable[
    [np.ndarray, int, list[list[str]]], Awaitable[list[tuple[list[str], list[float]]]]
]
"""(B, D) query latents, k, per-query exclude lists -> per query (track ids, distances)."""
ScoreFn = Callable[[np.ndarray, list[str], list[str]], Awaitable[ScoredBatch]]
"""(B, size) observations, modes, arms -> ScoredBatch."""


class RecommendationPipeline:
    """Batched recommend + feedback over injected embed/retrieve/score steps."""

    def __init__(
        self,
        layout: ObservationLayout,
        catalog: CatalogTable,
        store: UserStore,
        sink: FeedbackSink,
        embed: EmbedFn,
        retrieve: RetrieveFn,
        score: ScoreFn,
        arms: ArmAssignment | None = None,
        reward_config: RewardConfig | None = None,
        clock: Callable[[], float] = time.time,
        neighbour_cache: NeighbourCache | None = None,
        observer: PipelineObserver | None = None,
        candidate_pool: ServedCandidatePool | None = None,
    ) -> None:
        if candidate_pool is not None and candidate_pool.config.k != layout.k:
            raise ValueError(
                f"the candidate pool has k={candidate_pool.config.k}, the policy's layout k={layout.k}"
            )
        self.candidate_pool = candidate_pool
        self.layout = layout
        self.catalog = catalog
        self.store = store
        self.sink = sink
        self.embed, self.retrieve, self.score = embed, retrieve, score
        self.arms = arms or ArmAssignment()
        self.reward_config = reward_config or RewardConfig()
        self.clock = clock
        self.neighbour_cache = neighbour_cache
        self.observer = observer or PipelineObserver()

    # -- recommend ------------------------------------------------------------------------
    def check(self, request: RecommendRequest) -> None:
        """Refusals that need the served state (the schema already checked the rest)."""
        if request.k > self.layout.k:
            raise InvalidInputError(
                "k", f"k={request.k} is above the served policy's k={self.layout.k}"
            )
        if request.track_id is not None and self.catalog.row(request.track_id) is None:
            raise NotFoundError("track_id", f"unknown track id {request.track_id!r}")
        if len(set(request.exclude) | {request.track_id}) >= len(self.catalog.track_ids):
            raise InvalidInputError("exclude", "no candidate is left after the exclusions")

    async def recommend_batch(
        self, requests: list[RecommendRequest]
    ) -> list[RecommendResponse | ServiceError]:
        """Answer a batch; a refused request gets its ServiceError in its slot."""
        results: list[RecommendResponse | ServiceError | None] = [None] * len(requests)
        live: list[int] = []
        for i, request in enumerate(requests):
            try:
                self.check(request)
                live.append(i)
            except ServiceError as exc:
                results[i] = exc
        if live:
            answered = await self._answer([requests[i] for i in live])
            for i, response in zip(live, answered, strict=True):
                results[i] = response
        return results  # type: ignore[return-value]

    async def _answer(self, requests: list[RecommendRequest]) -> list[RecommendResponse]:
        now = self.clock()
        current = await self._current_latents(requests)
        day = day_of(now)
        hour, weekday = hour_and_weekday(now)
        found = await self._pool(requests, current, day)
        sessions = [r.session_id or f"{r.user_id}-{day}" for r in requests]
        started = time.perf_counter()
        context = await self.store.decision_context(
            [r.user_id for r in requests], sessions, [ids for ids, _, _ in found], day
        )
        self.observer.store_call("decision_context", time.perf_counter() - started)
        candidates = [
            _Candidates(
                ids,
                distances,
                self.catalog.latents[[self.catalog.row_of[t] for t in ids]],
                context.relationships[i],
                sources,
            )
            for i, (ids, distances, sources) in enumerate(found)
        ]
        obs = build_observations(
            self.layout,
            current,
            context.tastes,
            np.full(len(requests), hour),
            np.full(len(requests), weekday),
            [c.latents for c in candidates],
            [c.relationship for c in candidates],
        )
        arms = [self.arms(r.user_id) for r in requests]
        scored = await self.score(obs, [r.mode for r in requests], arms)
        decisions = [
            self._decision(request, sessions[i], candidates[i], context, scored, i, arms[i], now)
            for i, request in enumerate(requests)
        ]
        started = time.perf_counter()
        await self.store.remember(decisions)
        self.observer.store_call("remember", time.perf_counter() - started)
        self.observer.recommended(arms, list(scored.versions))
        return [
            self._response(request, decisions[i], candidates[i], scored, i)
            for i, request in enumerate(requests)
        ]

    async def _current_latents(self, requests: list[RecommendRequest]) -> np.ndarray:
        """(B, D) latent of the song playing: a table lookup for catalog tracks, the
        Embedder for raw features."""
        current = np.zeros((len(requests), self.layout.latent_dim), np.float32)
        by_features = [i for i, r in enumerate(requests) if r.features is not None]
        for i, request in enumerate(requests):
            if request.track_id is not None:
                current[i] = self.catalog.latents[self.catalog.row(request.track_id)]
        if by_features:
            raw = np.asarray([requests[i].features.as_row() for i in by_features], np.float64)  # type: ignore[union-attr]
            current[by_features] = await self.embed(raw)
        return current

    def _decision(
        self,
        request: RecommendRequest,
        session_id: str,
        candidates: _Candidates,
        context: DecisionContext,
        scored: ScoredBatch,
        i: int,
        arm: str,
        now: float,
    ) -> PendingDecision:
        """Row ``i`` of a scored batch as the decision its feedback will find."""
        return PendingDecision(
            request_id=uuid.uuid4().hex,
            user_id=request.user_id,
            session_id=session_id,
            position=context.positions[i],
            timestamp=int(now),
            current_track_id=request.track_id or "<features>",
            candidate_track_ids=candidates.track_ids,
            candidate_latents=candidates.latents,
            candidate_relationship=candidates.relationship,
            user_taste=context.tastes[i].copy(),
            chosen_index=int(scored.chosen[i]),
            behaviour_logp=float(scored.logp[i]),
            policy_version=scored.versions[i],
            arm=arm,
            candidate_sources=candidates.sources,
        )

    def _response(
        self,
        request: RecommendRequest,
        decision: PendingDecision,
        candidates: _Candidates,
        scored: ScoredBatch,
        i: int,
    ) -> RecommendResponse:
        ids = candidates.track_ids
        probabilities = scored.probabilities[i, : len(ids)]
        order = np.argsort(-probabilities, kind="stable")
        chosen = decision.chosen_index
        return RecommendResponse(
            request_id=decision.request_id,
            user_id=request.user_id,
            candidates=[
                self._candidate(ids[s], probabilities[s], candidates.distances[s]) for s in order
            ],
            chosen_track_id=ids[chosen],
            chosen_rank=int(np.flatnonzero(order == chosen)[0]),
            propensity=float(np.exp(scored.logp[i])),
            value=scored.values[i],
            mode=request.mode,
            model_version=scored.versions[i],
            policy=scored.policies[i],
            arm=decision.arm,
        )

    async def _pool(
        self, requests: list[RecommendRequest], current: np.ndarray, day: int
    ) -> list[tuple[list[str], list[float], list[str] | None]]:
        """Each request's first ``k`` candidates (ids, distances, sources): the song's kNN,
        or the multi-source pool (services/core/served_pool.py) when one is configured."""
        pool = self.candidate_pool
        neighbours = await self._neighbours(
            requests, current, None if pool is None else pool.config.k
        )
        if pool is None:
            return [
                (ids[: r.k], d[: r.k], None)
                for r, (ids, d) in zip(requests, neighbours, strict=True)
            ]
        pooled = await pool.gather(
            [r.user_id for r in requests], [r.track_id for r in requests],
            [list(r.exclude) for r in requests], current, neighbours, day,
        )  # fmt: skip
        return [
            (p.track_ids[: r.k], p.distances[: r.k], p.sources[: r.k])
            for r, p in zip(requests, pooled, strict=True)
        ]

    async def _neighbours(
        self, requests: list[RecommendRequest], current: np.ndarray, width: int | None = None
    ) -> list[tuple[list[str], list[float]]]:
        """Candidates per request (``width`` each, default the request's k): from the
        neighbour cache when it answers exactly, the rest in one Retriever call."""
        found: list[tuple[list[str], list[float]] | None] = [None] * len(requests)
        if self.neighbour_cache is not None:
            for i, request in enumerate(requests):
                if request.track_id is not None:
                    found[i] = self.neighbour_cache.lookup(
                        self.catalog.row_of[request.track_id],
                        width or request.k,
                        set(request.exclude) if request.exclude else (),
                    )
        missing = [i for i, answer in enumerate(found) if answer is None]
        if missing:
            excludes: list[list[str]] = []
            for i in missing:
                track_id = requests[i].track_id
                excludes.append(list(requests[i].exclude) + ([track_id] if track_id else []))
            k = width or max(requests[i].k for i in missing)
            retrieved = await self.retrieve(current[missing], k, excludes)
            for i, answer in zip(missing, retrieved, strict=True):
                found[i] = answer
        return found  # type: ignore[return-value]

    def _candidate(self, track_id: str, probability: float, distance: float) -> Candidate:
        row = self.catalog.row(track_id)
        return Candidate(
            track_id=track_id,
            score=float(probability),
            distance=float(distance),
            track_name=None if row is None else self.catalog.names[row],
            track_artist=None if row is None else self.catalog.artists[row],
        )

    # -- feedback -------------------------------------------------------------------------
    async def feedback(self, request: FeedbackRequest) -> FeedbackResponse:
        """Journal the decision row durably, then update the user's state."""
        started = time.perf_counter()
        decision = await self.store.claim(request.request_id)
        self.observer.store_call("claim", time.perf_counter() - started)
        if decision is None:
            raise NotFoundError(
                "request_id",
                f"unknown request id {request.request_id!r} (never issued, expired, or already answered)",
            )
        chosen_track = decision.candidate_track_ids[decision.chosen_index]
        if request.track_id != chosen_track:
            await self.store.give_back(decision)  # a wrong track does not use up the request
            raise ConflictError(
                "track_id",
                f"track {request.track_id!r} is not the pick {chosen_track!r} of this request",
            )
        chosen_row = self.catalog.row(chosen_track)
        duration = (
            None
            if chosen_row is None or not np.isfinite(self.catalog.durations_s[chosen_row])
            else float(self.catalog.durations_s[chosen_row])
        )
        listened = listened_from(request.listen_fraction, duration, request.skip_level)
        reward = float(
            compute_reward(
                np.asarray([request.listen_fraction]),
                np.asarray([request.liked]),
                np.asarray([request.skip_level]),
                self.reward_config,
            )[0]
        )
        row = decision_row(decision, request, listened, reward)
        # The decision was claimed before the (threaded) journal write, so a duplicate
        # feedback sent meanwhile, to this replica or another, gets 404; give it back if
        # the write fails.
        try:
            await asyncio.to_thread(self.sink.append, row)
        except Exception:
            await self.store.give_back(decision)
            raise
        if listened:
            # On the decision's day, as the rebuild from the log replays it.
            started = time.perf_counter()
            await self.store.record_listen(
                decision.user_id,
                chosen_track,
                decision.candidate_latents[decision.chosen_index],
                day_of(decision.timestamp),
            )
            self.observer.store_call("record_listen", time.perf_counter() - started)
        self.observer.feedback(
            decision.arm, decision.policy_version, listened, request.skip_level, reward
        )
        return FeedbackResponse(
            request_id=request.request_id,
            accepted=True,
            reward=reward,
            listened=listened,
            log_uri=self.sink.log_uri,
            journal=str(self.sink.journal_dir),
        )
