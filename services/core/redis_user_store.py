"""``UserStore`` in Redis: the user state shared by every ingress replica, on any machine.

Where it sits: chosen by ``ServiceConfig.user_store = "redis://host:port/db"``
(services/assembly.py). Same interface and conformance tests as the in-process store
(services/core/user_state.py, tests/services/test_user_store.py), against a real
redis-server.

Keys, under a namespace (``ServiceConfig.user_store_namespace``):

    <ns>:u:<user_id>     hash: "taste" (float32 bytes), "listens", "r:<track_id>" (the
                         relationship entry: R float32 + int32 day + uint8 listened that
                         day), "p:<session_id>" (next position)
    <ns>:d:<user_id>     list: the user's latest decisions (JSON), newest first, capped
    <ns>:q:<request_id>  string: a pending decision (JSON), expiring after pending_ttl_s
    <ns>:users           set of user ids
    <ns>:meta            hash: "built_from", "built_at" of the last completed rebuild

Atomicity: a decision takes its session position with HINCRBY (atomic); feedback claims
its decision with GETDEL (exactly one of two concurrent claims wins); a listen updates
the user's hash under WATCH/MULTI (optimistic: re-read and retry if another replica
changed that user in between), computing the update with the same ``apply_listen`` as
the in-process store. Each batch of decisions costs two round trips (context, remember);
a feedback two or three (claim, the listen's read and write).

Relationships are not capped per user here (Redis memory is the bound: set
``maxmemory`` and a policy); the in-process store keeps ``max_tracks_per_user``.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

import numpy as np

from rl.decision.observation import ObservationLayout
from services.core.user_state import (
    RECENT_DECISIONS,
    ContextRequest,
    DecisionContext,
    PendingDecision,
    RelationshipEntry,
    UserState,
    UserStore,
    apply_listen,
    recent_entry,
)

WATCH_RETRIES = 50
"""Optimistic retries of one listen's update before giving up (contention on one user)."""
LOAD_CHUNK = 1_000
"""Users written per round trip by ``load``."""


def _pack_entry(entry: RelationshipEntry) -> bytes:
    return (
        np.asarray(entry.state, "<f4").tobytes()
        + np.int32(entry.day).astype("<i4").tobytes()
        + bytes([1 if entry.listened_today else 0])
    )


def _unpack_entry(raw: bytes, n_betas: int) -> RelationshipEntry:
    state = np.frombuffer(raw, "<f4", count=n_betas).astype(np.float32)
    day = int(np.frombuffer(raw, "<i4", count=1, offset=4 * n_betas)[0])
    return RelationshipEntry(state, day, bool(raw[4 * n_betas + 4]))


class RedisUserStore(UserStore):
    """Parameters: those of ``UserStore`` plus ``url`` ("redis://host:port/db"),
    ``namespace`` (key prefix) and ``pending_ttl_s`` (how long a decision waits for its
    feedback)."""

    kind = "redis"

    def __init__(
        self,
        layout: ObservationLayout,
        default_taste: np.ndarray,
        url: str,
        taste_rate: float = 0.1,
        namespace: str = "encore",
        pending_ttl_s: float = 86_400.0,
    ) -> None:
        super().__init__(layout, default_taste, taste_rate)
        import redis.asyncio as aioredis

        if not pending_ttl_s > 0:
            raise ValueError(f"pending_ttl_s must be > 0, got {pending_ttl_s}")
        self.url = url
        self.namespace = namespace
        self.pending_ttl_ms = int(pending_ttl_s * 1000)
        self.redis: Any = aioredis.Redis.from_url(url)

    # -- keys -----------------------------------------------------------------------------
    def _user_key(self, user_id: str) -> str:
        return f"{self.namespace}:u:{user_id}"

    def _recent_key(self, user_id: str) -> str:
        return f"{self.namespace}:d:{user_id}"

    def _pending_key(self, request_id: str) -> str:
        return f"{self.namespace}:q:{request_id}"

    # -- decision time --------------------------------------------------------------------
    async def _context(self, decisions: list[ContextRequest], day: int) -> DecisionContext:
        pipe = self.redis.pipeline(transaction=False)
        for user_id, session_id, ids in decisions:
            key = self._user_key(user_id)
            pipe.hmget(key, ["taste", *[f"r:{t}" for t in ids]])
            pipe.hincrby(key, f"p:{session_id}", 1)
        if decisions:
            pipe.sadd(f"{self.namespace}:users", *{user_id for user_id, _, _ in decisions})
        replies = await pipe.execute()
        tastes = np.zeros((len(decisions), self.layout.latent_dim), np.float32)
        relationships, positions = [], []
        for i, (_, _, ids) in enumerate(decisions):
            fields, position = replies[2 * i], replies[2 * i + 1]
            tastes[i] = self._taste(fields[0])
            relationship = np.zeros((len(ids), self.layout.n_betas), np.float32)
            for slot, raw in enumerate(fields[1:]):
                if raw is not None:
                    relationship[slot] = _unpack_entry(raw, self.layout.n_betas).at_start_of(
                        day, self.betas
                    )
            relationships.append(relationship)
            positions.append(int(position) - 1)
        return DecisionContext(tastes, relationships, positions)

    def _taste(self, raw: bytes | None) -> np.ndarray:
        if raw is None:
            return self.default_taste.copy()
        return np.frombuffer(raw, "<f4").astype(np.float32)

    async def remember(self, decisions: list[PendingDecision]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for decision in decisions:
            pipe.set(
                self._pending_key(decision.request_id),
                json.dumps(decision.to_json()),
                px=self.pending_ttl_ms,
            )
            recent = self._recent_key(decision.user_id)
            pipe.lpush(recent, json.dumps(recent_entry(decision)))
            pipe.ltrim(recent, 0, RECENT_DECISIONS - 1)
        await pipe.execute()

    # -- feedback time --------------------------------------------------------------------
    async def claim(self, request_id: str) -> PendingDecision | None:
        raw = await self.redis.getdel(self._pending_key(request_id))
        return None if raw is None else PendingDecision.from_json(json.loads(raw))

    async def give_back(self, decision: PendingDecision) -> None:
        await self.redis.set(
            self._pending_key(decision.request_id),
            json.dumps(decision.to_json()),
            px=self.pending_ttl_ms,
        )

    async def record_listen(
        self, user_id: str, track_id: str, latent: np.ndarray | None, day: int
    ) -> None:
        from redis.exceptions import WatchError

        key, field = self._user_key(user_id), f"r:{track_id}"
        for _ in range(WATCH_RETRIES):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    taste, listens, raw = await pipe.hmget(key, ["taste", "listens", field])
                    state = UserState(taste=self._taste(taste), listens=int(listens or 0))
                    if raw is not None:
                        state.relationships[track_id] = _unpack_entry(raw, self.layout.n_betas)
                    apply_listen(state, track_id, latent, day, self.taste_rate, self.betas)
                    pipe.multi()
                    pipe.hset(
                        key,
                        mapping={
                            "taste": np.asarray(state.taste, "<f4").tobytes(),
                            "listens": state.listens,
                            field: _pack_entry(state.relationships[track_id]),
                        },
                    )
                    pipe.sadd(f"{self.namespace}:users", user_id)
                    await pipe.execute()
                    return
                except WatchError:
                    continue  # another replica changed this user meanwhile: read again
        raise RuntimeError(f"user {user_id!r} changed {WATCH_RETRIES} times during one update")

    # -- views and rebuilds ---------------------------------------------------------------
    async def user(self, user_id: str) -> UserState | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self._user_key(user_id))
        pipe.lrange(self._recent_key(user_id), 0, -1)
        fields, recent = await pipe.execute()
        if not fields and not recent:
            return None
        state = UserState(taste=self._taste(fields.get(b"taste")))
        state.listens = int(fields.get(b"listens", 0))
        entries = []
        for name, value in fields.items():
            if name.startswith(b"r:"):
                entries.append((name[2:].decode(), _unpack_entry(value, self.layout.n_betas)))
            elif name.startswith(b"p:"):
                state.positions[name[2:].decode()] = int(value)
        # Least recently listened first, as the in-process store orders them.
        entries.sort(key=lambda item: item[1].day)
        state.relationships = OrderedDict(entries)
        state.recent = deque((json.loads(r) for r in reversed(recent)), maxlen=RECENT_DECISIONS)
        return state

    async def load(self, users: Iterable[tuple[str, UserState]], source: str) -> int:
        loaded, pipe = 0, self.redis.pipeline(transaction=False)
        for user_id, state in users:
            key, recent = self._user_key(user_id), self._recent_key(user_id)
            mapping: dict[str, Any] = {
                "taste": np.asarray(state.taste, "<f4").tobytes(),
                "listens": state.listens,
            }
            mapping.update({f"r:{t}": _pack_entry(e) for t, e in state.relationships.items()})
            mapping.update({f"p:{s}": p for s, p in state.positions.items()})
            pipe.delete(key, recent)
            pipe.hset(key, mapping=mapping)
            if state.recent:
                pipe.lpush(recent, *[json.dumps(r) for r in state.recent])
            pipe.sadd(f"{self.namespace}:users", user_id)
            loaded += 1
            if loaded % LOAD_CHUNK == 0:
                await pipe.execute()
        await pipe.execute()
        await self.redis.hset(
            f"{self.namespace}:meta", mapping={"built_from": source, "built_at": time.time()}
        )
        return loaded

    async def built_from(self) -> str | None:
        raw = await self.redis.hget(f"{self.namespace}:meta", "built_from")
        return None if raw is None else raw.decode()

    async def stats(self) -> dict[str, Any]:
        users = await self.redis.scard(f"{self.namespace}:users")
        return {"kind": self.kind, "users": int(users), "pending": None, "url": self.url}

    async def clear(self) -> None:
        """Delete every key of this namespace (tests and ``rebuild --clear``)."""
        async for key in self.redis.scan_iter(match=f"{self.namespace}:*", count=1000):
            await self.redis.delete(key)

    async def start_lock(self, ttl_s: float) -> bool:
        lock = f"{self.namespace}:meta:lock"
        return bool(await self.redis.set(lock, os.getpid(), nx=True, ex=int(ttl_s)))

    async def release_start_lock(self) -> None:
        await self.redis.delete(f"{self.namespace}:meta:lock")

    async def close(self) -> None:
        await self.redis.aclose()
