"""One hot-swap slot: what a serving replica runs, following a registry's production pointer.

Where it sits: under the Scorer's policy (services/core/scoring.PolicySlot) and the
Retriever's index (rl/songs/index_slot.IndexSlot); both load a version fully off the request
path, then swap it in with one assignment, and keep serving the old one when a version is
refused (each refusal reported once per promotion). Subclasses say only how to read the
pointer and how to load a version.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Generic, Protocol, TypeVar


class Versioned(Protocol):
    @property
    def version(self) -> str: ...


ServedT = TypeVar("ServedT", bound=Versioned)


class HotSwapSlot(Generic[ServedT]):
    """``active`` is what serves; ``sync()`` moves it to the pinned or production version.

    ``fallback_version``: a pinned version name that means "serve ``fallback``" (None: none).
    """

    fallback_version: str | None = None

    def __init__(self, fallback: ServedT) -> None:
        self.fallback = fallback
        self.active: ServedT = fallback
        self.pinned_version: str | None = None
        self.refusals: list[dict[str, Any]] = []
        self._refused_keys: set[tuple[str, float]] = set()
        self._lock = threading.Lock()  # one load at a time; serving never waits on it

    def _production_pointer(self) -> dict[str, Any] | None:
        """The registry's production pointer, or None when there is no registry or no version."""
        raise NotImplementedError

    def _load(self, version: str) -> ServedT:
        """The version fully loaded and checked; raises to refuse it."""
        raise NotImplementedError

    def _target(self) -> tuple[str, float] | None:
        """(version, promoted_at) to serve, or None when nothing is pinned or promoted."""
        if self.pinned_version is not None:
            return self.pinned_version, 0.0
        pointer = self._production_pointer()
        if pointer is None:
            return None
        return str(pointer["version"]), float(pointer.get("promoted_at", 0.0))

    def sync(self) -> str | None:
        """Swap to the target version if it changed. Returns a refusal reason or None."""
        with self._lock:
            try:
                target = self._target()
            except Exception as exc:  # an unreadable pointer is reported, never served
                return self._refuse(
                    ("<pointer>", time.time()), f"production pointer unreadable: {exc}"
                )
            if target is None or target[0] == self.active.version or target in self._refused_keys:
                return None
            if self.fallback_version is not None and target[0] == self.fallback_version:
                self.active = self.fallback
                return None
            try:
                candidate = self._load(target[0])
            except Exception as exc:
                return self._refuse(target, f"{type(exc).__name__}: {exc}")
            # Fully loaded and probed: one assignment swaps it in for every later request.
            self.active = candidate
            return None

    def _refuse(self, key: tuple[str, float], reason: str) -> str:
        self._refused_keys.add(key)
        self.refusals.append(
            {"version": key[0], "reason": reason, "at": time.time(), "kept": self.active.version}
        )
        del self.refusals[:-20]
        return reason
