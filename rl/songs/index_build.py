"""Building the Retriever's kNN index offline: exact for small catalogs, faiss for large.

Where it sits: ``encore index build`` (rl/cli/index.py) and benchmarks/bench_catalog_scale.py
call ``build_index`` on a catalog's song latents; rl/songs/index_registry.py saves the result
as a version the Retriever deployment (services/retriever.py) loads and hot-swaps.

Every build checks itself before it can be saved: recall@k against exact brute force
(``rl.songs.retrieval.brute_force_topk``, tie-aware ``recall_at_k``) on sampled queries:
half are catalog songs (what a catalog request asks), half are songs moved by noise (what
an embedded raw-feature request asks, a point that is no song). An approximate index raises
its search breadth (IVF's ``nprobe``, HNSW's ``efSearch``) until the recall reaches
``min_recall``, and the build fails if no breadth does. The figures go in the manifest.

Backends, all meeting sklearn's ``kneighbors(queries, n_neighbors) -> (distances, rows)``
so ``KnnIndex`` serves any of them with the same exclusion logic:

- ``exact``: scikit-learn's KD-tree (exact; what the Retriever always served), rebuilt
  from the latents at load (deterministic, ~0.5 s at 28k songs);
- ``ivf``: faiss ``IndexIVFFlat`` (k-means cells; exact distances inside probed cells);
- ``hnsw``: faiss ``IndexHNSWFlat`` (a navigable small-world graph).
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rl.songs.retrieval import KnnIndex, RetrievalError, brute_force_topk, recall_at_k

INDEX_KINDS = ("auto", "exact", "ivf", "hnsw")


class IndexBuildError(RuntimeError):
    """An index cannot be built as asked (bad setting, or recall below the target)."""


@dataclass(frozen=True)
class IndexConfig:
    """How to build a retrieval index (defaults: what ``encore index build`` does)."""

    kind: str = "auto"
    """"exact" (KD-tree), "ivf" (faiss IVF-Flat), "hnsw" (faiss HNSW-Flat), or "auto":
    exact up to ``exact_max_songs`` songs, IVF above."""
    exact_max_songs: int = 200_000
    """Largest catalog "auto" serves exactly. At 1M songs the KD-tree's p99 is ~15x IVF's
    (README, catalog at 10M). >= 1."""
    recall_k: int = 20
    """k of the recall check: the most neighbours a Retriever call asks for (the neighbour
    table's width). >= 1."""
    min_recall: float = 0.99
    """recall@k against exact below which the build fails. In (0, 1]."""
    recall_queries: int = 200
    """Sampled queries of the recall check. >= 10."""
    nlist: int = 0
    """IVF cells; 0 = 4 sqrt(N) clipped to [16, 4096]. >= 0."""
    hnsw_m: int = 32
    """HNSW graph degree. >= 4."""
    threads: int = 1
    """faiss threads during the build and the check (1: the figures do not depend on how
    busy the machine's other cores are). >= 1."""
    seed: int = 0
    """Seed of the sampled queries and of IVF's training sample."""

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise IndexBuildError(f"kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        if self.exact_max_songs < 1 or self.recall_k < 1:
            raise IndexBuildError("exact_max_songs and recall_k must be >= 1")
        if not 0.0 < self.min_recall <= 1.0:
            raise IndexBuildError(f"min_recall must be in (0, 1], got {self.min_recall}")
        if self.recall_queries < 10:
            raise IndexBuildError(f"recall_queries must be >= 10, got {self.recall_queries}")
        if self.nlist < 0 or self.hnsw_m < 4 or self.threads < 1:
            raise IndexBuildError("need nlist >= 0, hnsw_m >= 4 and threads >= 1")

    def resolved_kind(self, songs: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "exact" if songs <= self.exact_max_songs else "ivf"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaissSearcher:
    """A faiss index behind sklearn's ``kneighbors``: Euclidean distances, -1 rows padded."""

    def __init__(self, index: Any, breadth: int) -> None:
        self.index = index
        self.set_breadth(breadth)

    def set_breadth(self, breadth: int) -> None:
        """How widely a query searches: IVF cells probed, or HNSW's candidate list."""
        import faiss

        if hasattr(self.index, "nprobe"):
            self.index.nprobe = breadth
        else:
            inner: Any = faiss.downcast_index(self.index)
            inner.hnsw.efSearch = breadth

    def kneighbors(self, queries: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        squared, rows = self.index.search(np.ascontiguousarray(queries, np.float32), n_neighbors)
        return np.sqrt(np.maximum(squared, 0.0)), rows

    @property
    def nbytes(self) -> int:
        import faiss

        return int(len(faiss.serialize_index(self.index)))


@dataclass
class BuiltIndex:
    """A built and checked index: the served ``KnnIndex`` plus what the manifest records."""

    index: KnnIndex
    kind: str
    params: dict[str, Any]
    """What loading needs besides the files: {"breadth": nprobe or efSearch, ...}."""
    report: dict[str, Any]
    """build_s, index_bytes, peak_rss_bytes, recall (k, queries, value, target)."""


def exact_topk_distances(
    latents: np.ndarray, queries: np.ndarray, k: int, chunk: int = 250_000
) -> np.ndarray:
    """(Q, k) exact distances by brute force, a chunk of the catalog at a time (a 10M
    catalog in one float64 (Q, N) matrix would take 16 GB at Q = 200)."""
    best = np.full((len(queries), 0), np.inf)
    for start in range(0, len(latents), chunk):
        _, distances = brute_force_topk(latents[start : start + chunk], queries, k)
        best = np.sort(np.concatenate([best, distances], axis=1), axis=1)[:, :k]
    return best


def recall_queries(latents: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Half catalog songs, half catalog songs moved by a quarter of each dimension's spread."""
    rng = np.random.default_rng(seed)
    picked = latents[rng.integers(0, len(latents), count)].astype(np.float32)
    moved = picked[count // 2 :]
    moved += rng.normal(0.0, 0.25, moved.shape).astype(np.float32) * latents.std(axis=0)
    return picked


def build_index(
    latents: np.ndarray, track_ids: Any, config: IndexConfig | None = None
) -> BuiltIndex:
    """Build the index ``config`` asks for over (N, D) ``latents`` and check its recall."""
    config = config or IndexConfig()
    latents = np.ascontiguousarray(latents, dtype=np.float32)
    if latents.ndim != 2 or len(latents) == 0:
        raise IndexBuildError(f"latents must be a non-empty (N, D) array, got {latents.shape}")
    kind = config.resolved_kind(len(latents))
    k = min(config.recall_k, len(latents))
    queries = recall_queries(latents, config.recall_queries, config.seed)
    reference = exact_topk_distances(latents, queries, k)
    started = time.perf_counter()
    try:
        if kind == "exact":
            index = KnnIndex(latents, track_ids)
            index_bytes = _kdtree_bytes(index)
            params: dict[str, Any] = {}
        else:
            searcher = _train_faiss(latents, kind, config)
            index = KnnIndex(latents, track_ids, searcher=searcher)
            index_bytes = searcher.nbytes
    except RetrievalError as exc:
        raise IndexBuildError(str(exc)) from exc
    build_s = time.perf_counter() - started
    if kind == "exact":
        recall = _recall(index, queries, reference, k)
    else:
        breadth, recall = _tune_breadth(index, searcher, queries, reference, k, config)
        params = {"breadth": breadth, **searcher_settings(searcher)}
    if recall < config.min_recall:
        raise IndexBuildError(
            f"{kind} index reaches recall@{k} {recall:.4f} < {config.min_recall} against exact; "
            "build an exact index (--kind exact) or raise nlist / hnsw_m"
        )
    report = {
        "build_s": build_s,
        "index_bytes": index_bytes,
        "latents_bytes": int(latents.nbytes),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "recall": {"k": k, "queries": len(queries), "value": recall, "target": config.min_recall},
        "songs": len(latents),
        "dim": int(latents.shape[1]),
    }
    return BuiltIndex(index=index, kind=kind, params=params, report=report)


def searcher_settings(searcher: FaissSearcher) -> dict[str, Any]:
    import faiss

    inner: Any = faiss.downcast_index(searcher.index)
    if hasattr(inner, "nlist"):
        return {"nlist": int(inner.nlist)}
    return {"hnsw_m": int(inner.hnsw.nb_neighbors(1))}


def _train_faiss(latents: np.ndarray, kind: str, config: IndexConfig) -> FaissSearcher:
    try:
        import faiss
    except ImportError as exc:
        raise IndexBuildError(f"a {kind} index needs faiss (pip install faiss-cpu)") from exc
    faiss.omp_set_num_threads(config.threads)
    n, dim = latents.shape
    if kind == "ivf":
        nlist = config.nlist or int(min(4096, max(16, 4 * np.sqrt(n))))
        nlist = min(nlist, n)
        quantizer = faiss.IndexFlatL2(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist)
        rng = np.random.default_rng(config.seed)
        ivf.train(latents[rng.integers(0, n, min(n, 50 * nlist))])
        ivf.add(latents)
        return FaissSearcher(ivf, breadth=1)
    hnsw: Any = faiss.IndexHNSWFlat(dim, config.hnsw_m)
    hnsw.hnsw.efConstruction = 80
    hnsw.add(latents)
    return FaissSearcher(hnsw, breadth=16)


def _tune_breadth(
    index: KnnIndex,
    searcher: FaissSearcher,
    queries: np.ndarray,
    reference: np.ndarray,
    k: int,
    config: IndexConfig,
) -> tuple[int, float]:
    """The smallest breadth (powers of two) whose recall reaches the target."""
    import faiss

    inner: Any = faiss.downcast_index(searcher.index)
    widest = int(inner.nlist) if hasattr(inner, "nlist") else 4096
    breadth, recall = 1 if hasattr(inner, "nlist") else 16, 0.0
    while True:
        searcher.set_breadth(breadth)
        recall = _recall(index, queries, reference, k)
        if recall >= config.min_recall or breadth >= widest:
            return breadth, recall
        breadth = min(2 * breadth, widest)


def _recall(index: KnnIndex, queries: np.ndarray, reference: np.ndarray, k: int) -> float:
    return recall_at_k(index.query(queries, k=k).distances, reference)


def _kdtree_bytes(index: KnnIndex) -> int:
    tree = index.searcher._tree  # type: ignore[attr-defined]  # sklearn's KDTree: its arrays are the index's memory
    return int(sum(a.nbytes for a in tree.get_arrays() if hasattr(a, "nbytes")))
