"""Per-user serving state: taste, relationship states with songs, and pending decisions.

Where it sits: the request pipeline (services/core/request_pipeline.py) asks a ``UserStore``
for the observation's ``user_taste`` and ``candidate_relationship`` parts at decision time,
remembers each decision until its feedback arrives, and records listens. This module holds
the interface and what the stores share; two stores implement it: ``InProcessUserStore``
(services/core/memory_user_store.py; the embedded default, one ingress replica) and
``RedisUserStore`` (services/core/redis_user_store.py; any number of ingress replicas or
machines). tests/services/test_user_store.py runs the same conformance tests against both.

The state is a materialised view of the decision log: a user's taste, relationships,
listens and session positions follow from their logged decisions alone (``apply_listen``
below is the one definition of a listen's effect; services/core/user_state_fold.py replays a
log through it), so ``encore user-state rebuild`` (services/user_state_rebuild.py)
recomputes it and losing the store loses nothing. Pending decisions are not in the log
(they await feedback), so they live in the store only.

Relationship state (the paper): s_{t+1} = beta * s_t + (1 - beta) * 1{listened on day t},
applied lazily: each (user, track) entry holds the state at the start of its day and
whether the user listened that day; reading it on a later day rolls it forward in closed
form (rl.decision.relationship_state).
"""

from __future__ import annotations

import abc
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rl.decision.observation import ObservationLayout, encode_context
from rl.decision.relationship_state import relationship_after_days, update_relationship_state

SECONDS_PER_DAY = 86_400
LISTENED_SECONDS = 30.0
"""A stream counts as a listen from 30 s on (the paper's c > 0)."""
RECENT_DECISIONS = 20
"""Decisions kept per user for ``GET /v1/users/{user_id}``."""


def day_of(timestamp: float) -> int:
    """Days since the Unix epoch (UTC): the service log's ``day`` partition."""
    return int(timestamp // SECONDS_PER_DAY)


def hour_and_weekday(timestamp: float) -> tuple[int, int]:
    """UTC hour (0..23) and weekday (Monday = 0), as the decision log records them."""
    struct = time.gmtime(timestamp)
    return struct.tm_hour, struct.tm_wday


@dataclass
class RelationshipEntry:
    state: np.ndarray  # (R,) at the start of ``day``
    day: int
    listened_today: bool = False

    def at_start_of(self, day: int, betas: np.ndarray) -> np.ndarray:
        if day <= self.day:
            return self.state
        after_today = update_relationship_state(self.state, np.asarray(self.listened_today), betas)
        return relationship_after_days(after_today, day - self.day - 1, betas)


@dataclass
class UserState:
    taste: np.ndarray  # (D,)
    relationships: OrderedDict[str, RelationshipEntry] = field(default_factory=OrderedDict)
    listens: int = 0
    positions: dict[str, int] = field(default_factory=dict)  # session_id -> next position
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_DECISIONS))
    """The user's latest decisions, oldest first (``recent_entry``)."""

    def copy(self) -> UserState:
        """A copy sharing nothing mutable with this state (what a store hands out)."""
        return UserState(
            taste=self.taste.copy(),
            relationships=OrderedDict(
                (t, RelationshipEntry(e.state.copy(), e.day, e.listened_today))
                for t, e in self.relationships.items()
            ),
            listens=self.listens,
            positions=dict(self.positions),
            recent=deque(self.recent, maxlen=RECENT_DECISIONS),
        )


@dataclass(frozen=True)
class PendingDecision:
    """What a decision looked like, kept until its feedback arrives."""

    request_id: str
    user_id: str
    session_id: str
    position: int
    timestamp: int
    current_track_id: str
    candidate_track_ids: list[str]
    candidate_latents: np.ndarray  # (K, D)
    candidate_relationship: np.ndarray  # (K, R)
    user_taste: np.ndarray  # (D,)
    chosen_index: int
    behaviour_logp: float
    policy_version: str
    arm: str
    candidate_sources: list[str] | None = None  # each candidate's pool source, if multi-source

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for name in ("candidate_latents", "candidate_relationship", "user_taste"):
            out[name] = np.asarray(out[name], np.float32).tolist()
        return out

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> PendingDecision:
        state = dict(state)
        for name in ("candidate_latents", "candidate_relationship", "user_taste"):
            state[name] = np.asarray(state[name], np.float32)
        return cls(**state)


def recent_entry(decision: PendingDecision) -> dict[str, Any]:
    """What ``GET /v1/users/{user_id}`` shows of one decision."""
    return {
        "request_id": decision.request_id,
        "timestamp": decision.timestamp,
        "session_id": decision.session_id,
        "position": decision.position,
        "current_track_id": decision.current_track_id,
        "candidate_track_ids": list(decision.candidate_track_ids),
        "chosen_track_id": decision.candidate_track_ids[decision.chosen_index],
        "policy_version": decision.policy_version,
        "arm": decision.arm,
    }


def apply_listen(
    state: UserState,
    track_id: str,
    latent: np.ndarray | None,
    day: int,
    taste_rate: float,
    betas: np.ndarray,
    max_tracks: int | None = None,
) -> None:
    """A listen (>= 30 s) on ``day``: move the taste toward the song (when its latent is
    known), count it, and mark the (user, track) relationship as listened that day.

    The one definition of a listen's effect: live feedback (both stores) and the rebuild
    from the log (``fold_user_rows``) call it."""
    if latent is not None:
        state.taste = (1.0 - taste_rate) * state.taste + taste_rate * np.asarray(latent, np.float32)
        state.taste = state.taste.astype(np.float32)
    state.listens += 1
    entry = state.relationships.get(track_id)
    if entry is None:
        entry = RelationshipEntry(np.zeros(len(betas), np.float32), day)
        state.relationships[track_id] = entry
        if max_tracks is not None and len(state.relationships) > max_tracks:
            state.relationships.popitem(last=False)
    elif day > entry.day:
        entry.state, entry.day, entry.listened_today = entry.at_start_of(day, betas), day, False
    state.relationships.move_to_end(track_id)
    entry.listened_today = True


@dataclass(frozen=True)
class DecisionContext:
    """What the store supplies for a batch of decisions."""

    tastes: np.ndarray  # (B, D)
    relationships: list[np.ndarray]  # B arrays of (K_b, R)
    positions: list[int]  # the next position in each request's session (now taken)


ContextRequest = tuple[str, str, list[str]]
"""One decision's (user_id, session_id, candidate track ids), as ``UserStore`` reads them."""


class UserStore(abc.ABC):
    """Per-user taste and relationship states plus pending decisions (the interface).

    Parameters shared by every implementation: ``layout`` (latent size, betas),
    ``default_taste`` (D,) of a user never seen (e.g. the mean catalog latent) and
    ``taste_rate``, the weight of a listened song's latent in the taste EMA, in (0, 1].
    Every method is a coroutine: a shared store answers over the network.
    """

    def __init__(
        self, layout: ObservationLayout, default_taste: np.ndarray, taste_rate: float = 0.1
    ) -> None:
        if not 0.0 < taste_rate <= 1.0:
            raise ValueError(f"taste_rate must be in (0, 1], got {taste_rate}")
        self.layout = layout
        self.betas = np.asarray(layout.betas, np.float32)
        self.default_taste = np.asarray(default_taste, np.float32).reshape(layout.latent_dim)
        self.taste_rate = float(taste_rate)

    kind: str = "abstract"

    async def decision_context(
        self,
        user_ids: list[str],
        session_ids: list[str],
        candidates: list[list[str]],
        day: int,
    ) -> DecisionContext:
        """Tastes and relationship states at the start of ``day``, and the next position
        of each session (taken: two calls never get the same position). The three lists
        are parallel: one entry per decision."""
        return await self._context(list(zip(user_ids, session_ids, candidates, strict=True)), day)

    @abc.abstractmethod
    async def _context(self, decisions: list[ContextRequest], day: int) -> DecisionContext:
        """``decision_context`` of (user_id, session_id, candidate track ids) per decision."""

    @abc.abstractmethod
    async def remember(self, decisions: list[PendingDecision]) -> None:
        """Keep decisions until their feedback (``claim``); add them to the users' recent."""

    @abc.abstractmethod
    async def claim(self, request_id: str) -> PendingDecision | None:
        """Take a pending decision (None if unknown, expired or already taken). Atomic:
        of two concurrent claims of one request id, at most one gets the decision."""

    @abc.abstractmethod
    async def give_back(self, decision: PendingDecision) -> None:
        """Undo a ``claim`` whose feedback could not be journaled."""

    @abc.abstractmethod
    async def record_listen(
        self, user_id: str, track_id: str, latent: np.ndarray | None, day: int
    ) -> None:
        """``apply_listen`` to the user's state, atomically per user."""

    @abc.abstractmethod
    async def user(self, user_id: str) -> UserState | None:
        """A copy of the user's state, or None for a user the store has never seen."""

    @abc.abstractmethod
    async def load(self, users: Iterable[tuple[str, UserState]], source: str) -> int:
        """Replace the users' states (pending decisions are kept); returns users loaded
        and records ``source`` (e.g. the log URI) as what the state was built from."""

    @abc.abstractmethod
    async def built_from(self) -> str | None:
        """The source of the last ``load`` that completed, or None."""

    @abc.abstractmethod
    async def stats(self) -> dict[str, Any]:
        """{"kind", "users", "pending"} for /v1/health."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections."""

    async def start_lock(self, ttl_s: float) -> bool:
        """Take the right to rebuild this store at start (shared stores: one replica)."""
        return True

    async def release_start_lock(self) -> None:  # noqa: B027 (optional hook)
        """Give the start lock back."""

    def relationship_now(
        self, state: UserState | None, track_ids: list[str], day: int
    ) -> np.ndarray:
        """(K, R) relationship states of ``state`` with ``track_ids`` at the start of ``day``."""
        out = np.zeros((len(track_ids), self.layout.n_betas), np.float32)
        if state is not None:
            for slot, track_id in enumerate(track_ids):
                entry = state.relationships.get(track_id)
                if entry is not None:
                    out[slot] = entry.at_start_of(day, self.betas)
        return out


def build_observations(
    layout: ObservationLayout,
    current_latents: np.ndarray,  # (B, D)
    tastes: np.ndarray,  # (B, D)
    hours: np.ndarray,  # (B,)
    weekdays: np.ndarray,  # (B,)
    candidate_latents: list[np.ndarray],  # B arrays of (K_b, D), K_b <= layout.k
    candidate_relationship: list[np.ndarray],  # B arrays of (K_b, R)
) -> np.ndarray:
    """(B, layout.size) observations, candidates padded to layout.k with mask 0."""
    batch, k = len(current_latents), layout.k
    latents = np.zeros((batch, k, layout.latent_dim), np.float32)
    relationship = np.zeros((batch, k, layout.n_betas), np.float32)
    mask = np.zeros((batch, k), np.float32)
    for row, (cand, rel) in enumerate(zip(candidate_latents, candidate_relationship, strict=True)):
        n = len(cand)
        latents[row, :n], relationship[row, :n], mask[row, :n] = cand, rel, 1.0
    context = encode_context(np.asarray(hours), np.asarray(weekdays))
    return layout.build(current_latents, tastes, context, latents, relationship, mask)


def listened_from(listen_fraction: float, duration_s: float | None, skip_level: int) -> bool:
    """Did the play count as a listen (>= 30 s)? Without a duration, half the song does."""
    if duration_s is not None and duration_s > 0:
        return listen_fraction * duration_s >= LISTENED_SECONDS
    return skip_level >= 2 or listen_fraction >= 0.5
