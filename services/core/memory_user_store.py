"""``UserStore`` in this process's memory: the embedded default for one ingress replica.

Where it sits: chosen by ``ServiceConfig.user_store = "memory"`` (services/assembly.py).
The interface, the state it holds and the one definition of a listen's effect
(``apply_listen``) are in services/core/user_state.py; the shared alternative is
services/core/redis_user_store.py. tests/services/test_user_store.py runs the same
conformance tests against both.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np

from rl.decision.observation import ObservationLayout
from services.core.user_state import (
    ContextRequest,
    DecisionContext,
    PendingDecision,
    UserState,
    UserStore,
    apply_listen,
    recent_entry,
)


class InProcessUserStore(UserStore):
    """The store in this process's memory, bounded (least recently seen users dropped).

    Serves one ingress replica: pending decisions are found only by the replica that made
    them. ``max_users``, ``max_tracks_per_user`` and ``max_pending`` bound memory (LRU).
    """

    kind = "memory"

    def __init__(
        self,
        layout: ObservationLayout,
        default_taste: np.ndarray,
        taste_rate: float = 0.1,
        max_users: int = 100_000,
        max_tracks_per_user: int = 512,
        max_pending: int = 200_000,
    ) -> None:
        super().__init__(layout, default_taste, taste_rate)
        for name, value in (
            ("max_users", max_users),
            ("max_tracks_per_user", max_tracks_per_user),
            ("max_pending", max_pending),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.max_users = max_users
        self.max_tracks_per_user = max_tracks_per_user
        self.max_pending = max_pending
        self._users: OrderedDict[str, UserState] = OrderedDict()
        self._pending: OrderedDict[str, PendingDecision] = OrderedDict()
        self._built_from: str | None = None
        self.dropped_pending = 0

    def _state(self, user_id: str) -> UserState:
        state = self._users.get(user_id)
        if state is None:
            state = UserState(taste=self.default_taste.copy())
            self._users[user_id] = state
            if len(self._users) > self.max_users:
                self._users.popitem(last=False)
        else:
            self._users.move_to_end(user_id)
        return state

    async def _context(self, decisions: list[ContextRequest], day: int) -> DecisionContext:
        tastes = np.zeros((len(decisions), self.layout.latent_dim), np.float32)
        relationships, positions = [], []
        for i, (user_id, session_id, track_ids) in enumerate(decisions):
            state = self._state(user_id)
            tastes[i] = state.taste
            relationships.append(self.relationship_now(state, track_ids, day))
            positions.append(state.positions.get(session_id, 0))
            state.positions[session_id] = positions[-1] + 1
        return DecisionContext(tastes, relationships, positions)

    async def remember(self, decisions: list[PendingDecision]) -> None:
        for decision in decisions:
            self._remember_one(decision)
            self._state(decision.user_id).recent.append(recent_entry(decision))

    def _remember_one(self, decision: PendingDecision) -> None:
        self._pending[decision.request_id] = decision
        if len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.dropped_pending += 1

    async def claim(self, request_id: str) -> PendingDecision | None:
        return self._pending.pop(request_id, None)

    async def give_back(self, decision: PendingDecision) -> None:
        self._remember_one(decision)

    async def record_listen(
        self, user_id: str, track_id: str, latent: np.ndarray | None, day: int
    ) -> None:
        apply_listen(
            self._state(user_id),
            track_id,
            latent,
            day,
            self.taste_rate,
            self.betas,
            self.max_tracks_per_user,
        )

    async def user(self, user_id: str) -> UserState | None:
        state = self._users.get(user_id)
        if state is None:
            return None
        return state.copy()

    async def load(self, users: Iterable[tuple[str, UserState]], source: str) -> int:
        loaded = 0
        for user_id, state in users:
            self._users[user_id] = state
            self._users.move_to_end(user_id)
            if len(self._users) > self.max_users:
                self._users.popitem(last=False)
            loaded += 1
        self._built_from = source
        return loaded

    async def built_from(self) -> str | None:
        return self._built_from

    async def stats(self) -> dict[str, Any]:
        return {"kind": self.kind, "users": len(self._users), "pending": len(self._pending)}
