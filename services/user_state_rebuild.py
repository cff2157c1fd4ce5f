"""Rebuild the user state from the decision log, with Ray Data or in-process.

Where it sits: ``encore user-state rebuild --log URI`` (rl/cli/user_state.py) and the
ingress's start (services/assembly.py ``prepare_user_store``). The fold itself is
services/core/user_state_fold.py; this module reads the log, runs the fold per user
(``engine="ray"``: ``read_decisions`` then ``groupby("user_id").map_groups``, so a log of
any size is folded in parallel on the cluster; ``engine="pyarrow"``: one table in this
process, for small logs) and loads the result into a ``UserStore``.

At service start: the in-process store is empty after every start, so it is rebuilt from
the log each time; a Redis store outlives the service, so it is reloaded as it is (it
records what it was built from) and rebuilt only when it has never been built (an empty
or lost Redis). When several ingress replicas start on one empty Redis, one rebuilds under
a lock and the others wait for it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from rl import storage
from rl.config_checks import LOG_ENGINES
from rl.feedback.log import decisions_uri, read_decisions, read_decisions_table
from services.core.user_state import UserState, UserStore
from services.core.user_state_fold import (
    FOLD_COLUMNS,
    state_from_record,
    state_to_record,
    users_from_frame,
)

ENGINES = LOG_ENGINES
START_LOCK_TTL_S = 900
"""How long a replica may hold the rebuild lock of a shared store before another may take it."""

RECORD_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("taste", pa.list_(pa.float32())),
        ("listens", pa.int64()),
        ("tracks", pa.list_(pa.string())),
        ("states", pa.list_(pa.float32())),
        ("days", pa.list_(pa.int64())),
        ("listened_today", pa.list_(pa.bool_())),
        ("sessions", pa.list_(pa.string())),
        ("positions", pa.list_(pa.int64())),
        ("recent", pa.string()),
    ]
)
"""One folded user per row, as Ray Data carries it between the fold and the loader."""


def _has_decisions(log_uri: str) -> bool:
    return storage.exists(decisions_uri(log_uri))


class SongLatents(Protocol):
    """The songs a listen moves the taste toward: the served catalog, or an embedding."""

    @property
    def track_ids(self) -> np.ndarray: ...  # (N,)

    @property
    def latents(self) -> np.ndarray: ...  # (N, D)


def rebuilt_users(
    log_uri: str, songs: SongLatents, store: UserStore, engine: str = "ray"
) -> Iterator[tuple[str, UserState]]:
    """(user_id, state) for every user of the log, folded with ``store``'s settings (taste
    rate, betas, and its cap on songs kept per user, if it has one)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not _has_decisions(log_uri):
        return
    fold = {
        "row_of": {str(t): i for i, t in enumerate(songs.track_ids)},
        "latents": np.asarray(songs.latents, np.float32),
        "default_taste": store.default_taste,
        "taste_rate": store.taste_rate,
        "betas": store.betas,
        "max_tracks": getattr(store, "max_tracks_per_user", None),
    }
    if engine == "pyarrow":
        frame = read_decisions_table(log_uri).select(FOLD_COLUMNS).to_pandas()
        yield from users_from_frame(frame, **fold)
        return

    def fold_group(frame: Any) -> pa.Table:
        records = [state_to_record(u, s) for u, s in users_from_frame(frame, **fold)]
        return pa.Table.from_pylist(records, schema=RECORD_SCHEMA)

    dataset = read_decisions(log_uri, validate=False).select_columns(FOLD_COLUMNS)
    folded = dataset.groupby("user_id").map_groups(fold_group, batch_format="pandas")
    batch: Any
    for batch in folded.iter_batches(batch_format="pyarrow", batch_size=1_000):
        for record in batch.to_pylist():
            yield state_from_record(record, store.layout.n_betas)


async def rebuild_store(
    store: UserStore, log_uri: str, songs: SongLatents, engine: str = "ray"
) -> dict[str, Any]:
    """Fold the log into ``store``; returns {"users", "seconds", "log_uri", "engine"}."""
    started = time.perf_counter()
    users = rebuilt_users(log_uri, songs, store, engine)
    loaded = await store.load(users, source=log_uri)
    return {
        "users": loaded,
        "seconds": time.perf_counter() - started,
        "log_uri": log_uri,
        "engine": engine,
    }


async def prepare_at_start(
    store: UserStore,
    log_uri: str,
    songs: SongLatents,
    engine: str = "pyarrow",
    wait_s: float = START_LOCK_TTL_S,
) -> dict[str, Any]:
    """Rebuild an in-process store; reload (keep) or, if never built, rebuild a shared one."""
    if store.kind == "memory":
        report = await rebuild_store(store, log_uri, songs, engine)
        return {"action": "rebuilt", **report}
    built = await store.built_from()
    if built is not None:
        return {"action": "reloaded", "built_from": built}
    if await store.start_lock(START_LOCK_TTL_S):
        try:
            report = await rebuild_store(store, log_uri, songs, engine)
        finally:
            await store.release_start_lock()
        return {"action": "rebuilt", **report}
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:  # another replica rebuilds: wait for it
        built = await store.built_from()
        if built is not None:
            return {"action": "reloaded", "built_from": built}
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the shared user store was not rebuilt within {wait_s:.0f} s")


def run_in_fresh_loop(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion on a new event loop in a new thread.

    Why: a Serve replica's constructor may run while its event loop runs, where
    ``asyncio.run`` is refused; a thread has no loop. Network clients made inside ``make``
    belong to that loop and must be closed there."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(make())
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="user-state-start", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def describe_report(report: dict[str, Any]) -> str:
    if report.get("action") == "reloaded":
        return f"user state reloaded (built from {report['built_from']})"
    return (
        f"user state rebuilt from {report['log_uri']}: {report['users']} users "
        f"in {report['seconds']:.1f} s ({report['engine']}, pid {os.getpid()})"
    )
