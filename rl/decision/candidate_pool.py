"""The candidate pool: which k songs the policy chooses between, merged from several sources.

Where it sits: the simulator's recommender (rl/simulator/recommender.py) and the served
request pipeline (services/core/candidate_pool_service.py) gather, per decision, a ranked
list of songs from each source and call ``merge_pool``; the policy then scores the pool
(its observation has ``ObservationLayout.k == config.k`` slots) and the log records the
source of every candidate (``candidate_sources``).

Sources (``POOL_SOURCES``, the issue's list):

* ``song``: kNN of the song playing (the blog's pool, today's only source);
* ``taste``: kNN of the user's taste latent (songs like what the user likes, not only like
  the song playing);
* ``relationship``: songs the user already has a relationship with, strongest first
  (resurfacing: the paper's organic term says these are the songs people come back to);
* ``popular`` / ``sticky``: exploration draws among the songs the logs show are most
  played / have the highest stickiness S_i (rl/longterm/song_table.py).

The merge is a pure function of the ranked lists, so the simulator and the service build
the same pool from the same lists. Rules:

1. Quota pass: sources in the config's order; each takes its best remaining songs up to
   its quota.
2. Backfill pass: when a source ran short (few neighbours left, a new user without
   relationships, no song table yet), the free slots go to the other sources' next songs,
   again in the config's order, so the pool reaches k whenever enough songs exist.
3. A song found by several sources is credited to the first source that takes it (in
   pass order): it is never in the pool twice.
4. Excluded songs (the song playing, the session's history, the request's exclude list)
   are never taken. Padding is -1 (rows) and ``NO_SOURCE`` (sources).

The pool's order is the order songs were taken; the policy is permutation-equivariant
(rl/training/module.py), so order carries no meaning beyond the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

POOL_SOURCES: tuple[str, ...] = ("song", "taste", "relationship", "popular", "sticky")
"""Source names; a candidate's source code is its index here."""
NO_SOURCE = -1
"""Source code of a padding slot."""
MIN_K, MAX_K = 4, 50
"""The pool sizes a config may ask for (the issue's 4-50)."""


def source_names(codes: np.ndarray) -> list[list[str]]:
    """(B, K) source codes -> per row the names of its real (non-padding) candidates."""
    return [[POOL_SOURCES[c] for c in row if c != NO_SOURCE] for row in np.asarray(codes)]


@dataclass(frozen=True)
class CandidatePoolConfig:
    """How many candidates, and how many from each source (in priority order)."""

    quotas: tuple[tuple[str, int], ...] = (("song", 4),)
    """(source, count) pairs; the order is the priority of the merge; the counts sum to k.
    Default: today's pool, the 4 nearest songs of the song playing."""
    explore_top: int = 500
    """``popular``/``sticky`` draw uniformly among this many top songs of the song table."""
    seed: int = 0
    """Seed of the exploration draws (the pool is deterministic given it)."""

    def __post_init__(self) -> None:
        names = [name for name, _ in self.quotas]
        unknown = sorted(set(names) - set(POOL_SOURCES))
        if unknown:
            raise ValueError(f"unknown pool source(s) {unknown}; known: {list(POOL_SOURCES)}")
        if len(set(names)) != len(names):
            raise ValueError(f"a pool source is listed twice: {names}")
        if any(count < 1 for _, count in self.quotas):
            raise ValueError(f"every quota must be >= 1, got {dict(self.quotas)}")
        if not MIN_K <= self.k <= MAX_K:
            raise ValueError(f"the quotas sum to k={self.k}; k must be in [{MIN_K}, {MAX_K}]")
        if self.explore_top < 1:
            raise ValueError(f"explore_top must be >= 1, got {self.explore_top}")

    @property
    def k(self) -> int:
        return sum(count for _, count in self.quotas)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.quotas)

    def quota(self, source: str) -> int:
        return dict(self.quotas).get(source, 0)

    @property
    def is_song_knn_only(self) -> bool:
        """True for today's pool (kNN of the song playing only)."""
        return self.sources == ("song",)

    def spec(self) -> str:
        """The CLI form, e.g. ``song=4,taste=3,relationship=2,popular=1``."""
        return ",".join(f"{name}={count}" for name, count in self.quotas)

    @classmethod
    def from_spec(cls, spec: str, explore_top: int = 500, seed: int = 0) -> CandidatePoolConfig:
        """Parse ``name=count,...`` (a bare integer N means today's pool: ``song=N``)."""
        spec = spec.strip()
        if spec.isdigit():
            return cls(quotas=(("song", int(spec)),), explore_top=explore_top, seed=seed)
        quotas = []
        for part in spec.split(","):
            name, sep, count = part.partition("=")
            if not sep or not count.strip().lstrip("-").isdigit():
                raise ValueError(
                    f"pool spec {spec!r}: each part must be SOURCE=COUNT (sources: "
                    f"{', '.join(POOL_SOURCES)}), got {part!r}"
                )
            quotas.append((name.strip(), int(count)))
        return cls(quotas=tuple(quotas), explore_top=explore_top, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "quotas": [[name, count] for name, count in self.quotas],
            "explore_top": self.explore_top,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> CandidatePoolConfig:
        return cls(
            quotas=tuple((str(name), int(count)) for name, count in state["quotas"]),
            explore_top=int(state.get("explore_top", 500)),
            seed=int(state.get("seed", 0)),
        )


DEFAULT_POOL = CandidatePoolConfig()
"""Today's pool: the 4 nearest songs of the song playing."""
MULTI_SOURCE_POOL = CandidatePoolConfig(
    quotas=(("song", 4), ("taste", 2), ("relationship", 2), ("popular", 1), ("sticky", 1))
)
"""The measured multi-source pool (README): k = 10."""


@dataclass(frozen=True)
class CandidatePool:
    """B pools of k candidates."""

    rows: np.ndarray  # (B, k) int64 song rows, -1 padding
    sources: np.ndarray  # (B, k) int8 index into POOL_SOURCES, NO_SOURCE for padding

    def source_names(self) -> list[list[str]]:
        return source_names(self.sources)


def _fresh(columns: np.ndarray, blocked: np.ndarray) -> np.ndarray:
    """(B, W) ranked songs, (B, E) songs already taken or excluded -> (B, W) bool: the
    song is real, not blocked, and not an earlier column's song (first occurrence wins)."""
    ok = (columns >= 0) & ~(columns[:, :, None] == blocked[:, None, :]).any(axis=2)
    width = columns.shape[1]
    if width > 1:
        earlier = np.tril(np.ones((width, width), bool), -1)  # earlier[j, i]: i < j
        ok &= ~((columns[:, :, None] == columns[:, None, :]) & earlier).any(axis=2)
    return ok


def merge_pool(
    ranked: Mapping[str, np.ndarray],
    config: CandidatePoolConfig,
    exclude: np.ndarray | None = None,
) -> CandidatePool:
    """Merge per-source ranked lists into pools of ``config.k`` (the module docstring's rules).

    ``ranked[source]`` is (B, W_s) int song rows, best first, -1 padding; a source the
    config names but ``ranked`` lacks contributes nothing (its slots are backfilled).
    ``exclude`` is (B, E) rows never to take (-1 padding)."""
    lists = {name: np.asarray(ranked[name], np.int64) for name in config.sources if name in ranked}
    if not lists:
        raise ValueError(f"none of the pool's sources {config.sources} was given")
    batch = len(next(iter(lists.values())))
    for name, columns in lists.items():
        if columns.ndim != 2 or len(columns) != batch:
            raise ValueError(f"ranked[{name!r}] must be ({batch}, W), got {columns.shape}")
    k = config.k
    rows = np.full((batch, k), -1, np.int64)
    sources = np.full((batch, k), NO_SOURCE, np.int8)
    excluded = np.zeros((batch, 0), np.int64) if exclude is None else np.asarray(exclude, np.int64)
    filled = np.zeros(batch, np.int64)
    for backfill in (False, True):
        for name in config.sources:
            if name not in lists or lists[name].shape[1] == 0:
                continue
            columns = lists[name]
            want = k - filled if backfill else np.minimum(config.quota(name), k - filled)
            if not want.any():
                continue
            ok = _fresh(columns, np.concatenate([excluded, rows], axis=1))
            rank = np.cumsum(ok, axis=1) - 1
            take = ok & (rank < want[:, None])
            b, position = np.nonzero(take)
            slot = filled[b] + rank[b, position]
            rows[b, slot] = columns[b, position]
            sources[b, slot] = POOL_SOURCES.index(name)
            filled += take.sum(axis=1)
        if (filled == k).all():
            break
    return CandidatePool(rows=rows, sources=sources)


def merge_pool_naive(
    ranked: Mapping[str, np.ndarray],
    config: CandidatePoolConfig,
    exclude: np.ndarray | None = None,
) -> CandidatePool:
    """The same merge, one decision and one song at a time (the test reference)."""
    first = next(np.asarray(ranked[name]) for name in config.sources if name in ranked)
    batch = len(first)
    rows = np.full((batch, config.k), -1, np.int64)
    sources = np.full((batch, config.k), NO_SOURCE, np.int8)
    for b in range(batch):
        blocked = set() if exclude is None else {int(x) for x in exclude[b] if x >= 0}
        pool: list[tuple[int, str]] = []
        for backfill in (False, True):
            for name in config.sources:
                if name not in ranked:
                    continue
                taken_here = 0
                for song in np.asarray(ranked[name])[b]:
                    song = int(song)
                    room = config.k - len(pool)
                    if not backfill:
                        room = min(room, config.quota(name) - taken_here)
                    if room <= 0:
                        break
                    if song < 0 or song in blocked or any(song == s for s, _ in pool):
                        continue
                    pool.append((song, name))
                    taken_here += 1
        for slot, (song, name) in enumerate(pool):
            rows[b, slot] = song
            sources[b, slot] = POOL_SOURCES.index(name)
    return CandidatePool(rows=rows, sources=sources)


def exploration_draws(
    top_rows: np.ndarray,  # (T,) the candidates to draw from (e.g. the most popular songs)
    batch: int,
    width: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(batch, width) uniform draws (with replacement; the merge drops repeats) from
    ``top_rows``; all -1 when there is nothing to draw from."""
    top_rows = np.asarray(top_rows, np.int64)
    if not len(top_rows) or width < 1:
        return np.full((batch, max(width, 0)), -1, np.int64)
    return top_rows[rng.integers(0, len(top_rows), (batch, width))]


def top_rows_by(scores: np.ndarray, top: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Rows of the ``top`` highest ``scores`` (ties: lower row first), among ``eligible``."""
    scores = np.asarray(scores, np.float64)
    candidates = np.arange(len(scores)) if eligible is None else np.flatnonzero(eligible)
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order[:top]]


def ranked_by_strength(items: np.ndarray, strength: np.ndarray, width: int) -> np.ndarray:
    """(B, L) song rows (-1 empty) with (B, L) strengths -> (B, width) rows, strongest
    first (ties: earlier slot first), -1 padding."""
    items = np.asarray(items, np.int64)
    key = np.where(items >= 0, np.asarray(strength, np.float64), -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :width]
    picked = np.take_along_axis(items, order, axis=1)
    picked[np.take_along_axis(items < 0, order, axis=1)] = -1
    if picked.shape[1] < width:
        picked = np.pad(picked, ((0, 0), (0, width - picked.shape[1])), constant_values=-1)
    return picked
