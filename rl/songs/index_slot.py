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

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rl.hot_swap import HotSwapSlot
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


class IndexSlot(HotSwapSlot[ServedIndex]):
    """The active index of one Retriever replica.

    Parameters
    ----------
    fallback : the exact index over the served embedding (served until one is promoted).
    index_uri : the index registry, or None to serve ``fallback`` only.
    fingerprint : ``catalog_fingerprint`` of the served embedding; other catalogs' indexes
        are refused.
    loader : (index_uri, version, fingerprint) -> ServedIndex; raises to refuse.
    """

    fallback_version = EMBEDDED_VERSION  # pinning "embedded" serves the exact default

    def __init__(
        self,
        fallback: KnnIndex,
        index_uri: str | None,
        fingerprint: str,
        loader: Callable[[str, str, str], ServedIndex] = load_registry_index,
    ) -> None:
        super().__init__(ServedIndex(fallback, EMBEDDED_VERSION, "exact", time.time()))
        self.index_uri = index_uri
        self.fingerprint = fingerprint
        self.loader = loader

    def _production_pointer(self) -> dict[str, object] | None:
        if self.index_uri is None:
            return None
        return IndexRegistry(self.index_uri).production_pointer()

    def _load(self, version: str) -> ServedIndex:
        return self.loader(self.index_uri or "", version, self.fingerprint)
