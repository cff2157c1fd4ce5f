"""Per-user serving state: taste, relationship states with songs, and pending decisions.

Where it sits: inside the ingress (services/ingress.py), between retrieval and scoring.
At decision time it supplies the observation's ``user_taste`` and
``candidate_relationship`` parts; when feedback arrives it turns the remembered decision
into a decision-log row (rl/feedback/schema.py) and updates the user's state. Pure numpy, no
Ray, so the in-process benchmark baseline and the tests use it directly.

Why here and not in the Scorer: feedback must find the context of its request (the
candidates, observation parts and behaviour_logp of the decision), and the user state must
be updated where the next observation is built. Keeping both in the replica that issues
request ids means no extra hop per request; the ingress therefore runs one replica (the
stateless Scorer, Retriever and Embedder scale out). Memory is bounded: at most
``max_users`` users (least recently seen evicted), ``max_tracks_per_user`` relationship
entries each, and ``max_pending`` decisions awaiting feedback (oldest dropped).

Relationship state (the paper): s_{t+1} = beta * s_t + (1 - beta) * 1{listened on day t},
applied lazily: each (user, track) entry holds the state at the start of its day and
whether the user listened that day; reading it on a later day rolls it forward in closed
form (rl.decision.relationship_state).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from rl.decision.observation import ObservationLayout, encode_context
from rl.decision.relationship_state import relationship_after_days, update_relationship_state

SECONDS_PER_DAY = 86_400
LISTENED_SECONDS = 30.0
"""A stream counts as a listen from 30 s on (the paper's c > 0)."""


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


class UserStateStore:
    """Bounded per-user taste and relationship states plus pending decisions.

    Parameters
    ----------
    layout : the observation layout (latent size, betas, k).
    default_taste : (D,) taste of a user never seen (e.g. the mean catalog latent).
    taste_rate : weight of a listened song's latent in the taste EMA, in (0, 1].
    max_users, max_tracks_per_user, max_pending : memory bounds (LRU eviction).
    """

    def __init__(
        self,
        layout: ObservationLayout,
        default_taste: np.ndarray,
        taste_rate: float = 0.1,
        max_users: int = 100_000,
        max_tracks_per_user: int = 512,
        max_pending: int = 200_000,
    ) -> None:
        if not 0.0 < taste_rate <= 1.0:
            raise ValueError(f"taste_rate must be in (0, 1], got {taste_rate}")
        for name, value in (
            ("max_users", max_users),
            ("max_tracks_per_user", max_tracks_per_user),
            ("max_pending", max_pending),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.layout = layout
        self.betas = np.asarray(layout.betas, np.float32)
        self.default_taste = np.asarray(default_taste, np.float32).reshape(layout.latent_dim)
        self.taste_rate = float(taste_rate)
        self.max_users = max_users
        self.max_tracks_per_user = max_tracks_per_user
        self.max_pending = max_pending
        self._users: OrderedDict[str, UserState] = OrderedDict()
        self._pending: OrderedDict[str, PendingDecision] = OrderedDict()
        self.dropped_pending = 0

    # -- decision time --------------------------------------------------------------------
    def user(self, user_id: str) -> UserState:
        state = self._users.get(user_id)
        if state is None:
            state = UserState(taste=self.default_taste.copy())
            self._users[user_id] = state
            if len(self._users) > self.max_users:
                self._users.popitem(last=False)
        else:
            self._users.move_to_end(user_id)
        return state

    def relationship(self, user_id: str, track_ids: list[str], day: int) -> np.ndarray:
        """(K, R) relationship states of a user with ``track_ids`` at the start of ``day``."""
        state = self.user(user_id)
        out = np.zeros((len(track_ids), self.layout.n_betas), np.float32)
        for slot, track_id in enumerate(track_ids):
            entry = state.relationships.get(track_id)
            if entry is not None:
                out[slot] = entry.at_start_of(day, self.betas)
        return out

    def observation_parts(
        self, user_id: str, candidate_track_ids: list[str], day: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(taste (D,), relationship (K, R)) for one decision."""
        return self.user(user_id).taste.copy(), self.relationship(user_id, candidate_track_ids, day)

    def next_position(self, user_id: str, session_id: str) -> int:
        positions = self.user(user_id).positions
        position = positions.get(session_id, 0)
        positions[session_id] = position + 1
        if len(positions) > 64:  # only recent sessions matter
            positions.pop(next(iter(positions)))
        return position

    def remember(self, decision: PendingDecision) -> None:
        self._pending[decision.request_id] = decision
        if len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.dropped_pending += 1

    def pending(self, request_id: str) -> PendingDecision | None:
        return self._pending.get(request_id)

    def forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    @property
    def n_users(self) -> int:
        return len(self._users)

    # -- feedback time --------------------------------------------------------------------
    def record_listen(self, user_id: str, track_id: str, latent: np.ndarray, day: int) -> None:
        """A listen (>= 30 s): move the taste toward the song, mark the relationship."""
        state = self.user(user_id)
        state.taste = (1.0 - self.taste_rate) * state.taste + self.taste_rate * np.asarray(
            latent, np.float32
        )
        state.listens += 1
        entry = state.relationships.get(track_id)
        if entry is None:
            entry = RelationshipEntry(np.zeros(self.layout.n_betas, np.float32), day)
            state.relationships[track_id] = entry
            if len(state.relationships) > self.max_tracks_per_user:
                state.relationships.popitem(last=False)
        elif day > entry.day:
            entry.state, entry.day, entry.listened_today = (
                entry.at_start_of(day, self.betas),
                day,
                False,
            )
        state.relationships.move_to_end(track_id)
        entry.listened_today = True


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
