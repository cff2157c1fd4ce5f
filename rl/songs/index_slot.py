"""The index one Retriever replica serves, following the index registry's production pointer.

Where it sits: services/retriever.py holds one ``IndexSlot``; its watcher thread calls
``sync`` every ``poll_interval_s`` (and ``reconfigure`` pins a version). The Scorer's
``PolicySlot`` (services/core/scoring.py) does the same for policies: a new version is
loaded, verified and probed off the request path, then swapped in with one assignment, so
a request reads either the old index or the new one, never a half-loaded one. A version
that fails (corrupt, built over another catalog, recall probe off) is refused, the old one
keeps serving, and the refusal is kept for ``describe``.

Until an index is promoted the slot serves ``fallback``: the exact KD-tree over the
service's embedding, built at start, which is what the Retriever always served.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rl.songs.index_registry import IndexRegistry, IndexRegistryError
from rl.songs.retrieval import KnnIndex, brute_force_topk, recall_at_k

EMBEDDED_VERSION = "embedded"
"""The version name of the fallback index (pin it to go back to the embedded default)."""


@dataclass(frozen=True)
class ServedIndex:
    index: KnnIndex
    version: str
    kind: str
    loaded_at: float


def load_registry_index(index_uri: str, version: str, fingerprint: str) -> ServedIndex:
    """Load, verify and probe ``version``; raises ``IndexRegistryError`` to refuse it."""
    index, entry = IndexRegistry(index_uri).load(version, expected_fingerprint=fingerprint)
    probe_recall(index, entry.report["recall"]["target"])
    return ServedIndex(index, version, entry.kind, time.time())


def probe_recall(index: KnnIndex, target: float, queries: int = 32) -> None:
    """A last check before serving: a few catalog songs' neighbours against brute force."""
    rows = np.linspace(0, len(index) - 1, num=min(queries, len(index))).astype(int)
    k = min(10, len(index))
    probes = index.latents[rows]
    # Brute force over a slice of the catalog would not be exact; over all of it costs
    # (Q, N) distances: 32 x 10M floats, about a second, once per swap.
    reference = np.concatenate(
        [brute_force_topk(index.latents[s : s + 500_000], probes, k)[1]
         for s in range(0, len(index), 500_000)], axis=1,
    )  # fmt: skip
    reference = np.sort(reference, axis=1)[:, :k]
    recall = recall_at_k(index.query(probes, k=k).distances, reference)
    if recall < target:
        raise IndexRegistryError(f"recall probe {recall:.3f} < {target} on {len(rows)} songs")


class IndexSlot:
    """The active index of one Retriever replica.

    Parameters
    ----------
    fallback : the exact index over the served embedding (served until one is promoted).
    index_uri : the index registry, or None to serve ``fallback`` only.
    fingerprint : ``catalog_fingerprint`` of the served embedding; other catalogs' indexes
        are refused.
    loader : (index_uri, version, fingerprint) -> ServedIndex; raises to refuse.
    """

    def __init__(
        self,
        fallback: KnnIndex,
        index_uri: str | None,
        fingerprint: str,
        loader: Callable[[str, str, str], ServedIndex] = load_registry_index,
    ) -> None:
        self.fallback = ServedIndex(fallback, EMBEDDED_VERSION, "exact", time.time())
        self.index_uri = index_uri
        self.fingerprint = fingerprint
        self.loader = loader
        self.active: ServedIndex = self.fallback
        self.pinned_version: str | None = None
        self.refusals: list[dict[str, object]] = []
        self._refused_keys: set[tuple[str, float]] = set()
        self._lock = threading.Lock()  # one load at a time; serving never waits on it

    def _target(self) -> tuple[str, float] | None:
        if self.pinned_version is not None:
            return self.pinned_version, 0.0
        if self.index_uri is None:
            return None
        pointer = IndexRegistry(self.index_uri).production_pointer()
        if pointer is None:
            return None
        return str(pointer["version"]), float(pointer.get("promoted_at", 0.0))

    def sync(self) -> str | None:
        """Swap to the target version if it changed. Returns a refusal reason or None."""
        with self._lock:
            try:
                target = self._target()
            except Exception as exc:  # an unreadable pointer is reported, never served
                return self._refuse(("<pointer>", time.time()), f"pointer unreadable: {exc}")
            if target is None or target[0] == self.active.version or target in self._refused_keys:
                return None
            if target[0] == EMBEDDED_VERSION:
                self.active = self.fallback
                return None
            try:
                candidate = self.loader(self.index_uri or "", target[0], self.fingerprint)
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
