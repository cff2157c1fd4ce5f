"""Content-relationship states for every (user, item) pair with history (paper section 4.1).

Where it sits: the first step of the long-term-value pipeline. The decision log and the
organic listens (``rl.feedback.schema`` contract) are reduced with Ray Data to *listen days*:
one row per distinct (user, item, day) on which the user listened to the item. From
those, this module computes the paper's EMA state

    s_{t+1,i} = beta ⊙ s_{t,i} + (1 - beta) · 1{listened to i on day t}

for several forgetting factors at once, stored sparsely (only pairs with history), and
updatable day by day (``RelationshipStateStore.update_day``, which calls
``rl.decision.relationship_state.update_relationship_state``, the same update the simulator and the served
Scorer use). Pairs that were not listened to are decayed lazily: a stored state is the
state at the start of ``as_of_day`` and is multiplied by beta^n when read n days later.

The batch path uses the closed form of the recursion,
s_T = Σ_{t_j < T} (1 - beta) · beta^(T - 1 - t_j), a weighted group-sum that vectorises.
The downstream consumers are ``stickiness`` (discovery and state datasets), ``taste``
and the Q-scorers (``q_scoring``) that need s, s⁺ and s⁻.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rl import storage
from rl.decision.observation import DEFAULT_BETAS
from rl.decision.relationship_state import relationship_after_days, update_relationship_state


@dataclass(frozen=True)
class ListenDays:
    """Distinct (user, item, day) listen events, integer-coded and sorted by (user, item, day).

    The shared input of relationship states, taste vectors and the discovery dataset.
    """

    user_ids: np.ndarray  # (U,) str vocabulary; ``user`` indexes into it
    track_ids: np.ndarray  # (I,) str vocabulary; ``item`` indexes into it
    user: np.ndarray  # (n,) int64 user code
    item: np.ndarray  # (n,) int64 item code
    day: np.ndarray  # (n,) int32 day of the listen
    minutes: np.ndarray  # (n,) float32 minutes listened to the item that day (0 if unknown)
    organic: np.ndarray  # (n,) bool: at least one organic (unrecommended) listen that day
    recommended: np.ndarray  # (n,) bool: at least one listen from a recommendation that day

    def __len__(self) -> int:
        return len(self.day)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.track_ids)

    @property
    def end_day(self) -> int:
        """One past the last day with a listen (the log's end, exclusive)."""
        return int(self.day.max()) + 1 if len(self.day) else 0

    def pair_key(self) -> np.ndarray:
        """(n,) int64 key user * n_items + item, sorted ascending like the rows."""
        return self.user * np.int64(max(self.n_items, 1)) + self.item

    def pair_starts(self) -> np.ndarray:
        """Row offsets where each (user, item) pair's run starts, plus len(self) at the end."""
        key = self.pair_key()
        change = np.flatnonzero(np.diff(key)) + 1
        return np.concatenate([[0], change, [len(key)]]).astype(np.int64)


def listen_days_from_frame(
    frame: pd.DataFrame | pa.Table,
    user_ids: np.ndarray | None = None,
    track_ids: np.ndarray | None = None,
) -> ListenDays:
    """Aggregate listen rows to distinct (user, item, day) and code them.

    ``frame`` needs ``user_id, track_id, day``; optional ``minutes`` (summed), ``organic``
    and ``recommended`` (or-ed; default: not organic, recommended). Rows may repeat.
    ``user_ids`` / ``track_ids`` fix the vocabularies (e.g. the catalog's order); ids
    absent from a given ``track_ids`` vocabulary raise ``ValueError``.
    """
    if isinstance(frame, pa.Table):
        frame = frame.to_pandas()
    missing = {"user_id", "track_id", "day"} - set(frame.columns)
    if missing:
        raise ValueError(f"listen rows need columns user_id, track_id, day; missing {missing}")
    n = len(frame)
    minutes = frame["minutes"].to_numpy(np.float64) if "minutes" in frame else np.zeros(n)
    organic = frame["organic"].to_numpy(bool) if "organic" in frame else np.zeros(n, bool)
    recommended = frame["recommended"].to_numpy(bool) if "recommended" in frame else ~organic
    user_codes, user_vocab = _codes(frame["user_id"].to_numpy(), user_ids, "user_id")
    item_codes, item_vocab = _codes(frame["track_id"].to_numpy(), track_ids, "track_id")
    day = frame["day"].to_numpy(np.int64)
    n_items = max(len(item_vocab), 1)
    n_days = int(day.max()) + 1 if n else 1
    # One composite key per (user, item, day); np.unique sorts it in (user, item, day) order.
    composite = (user_codes * n_items + item_codes) * n_days + day
    unique_key, inverse = np.unique(composite, return_inverse=True)
    return ListenDays(
        user_ids=user_vocab,
        track_ids=item_vocab,
        user=(unique_key // n_days) // n_items,
        item=(unique_key // n_days) % n_items,
        day=(unique_key % n_days).astype(np.int32),
        minutes=np.bincount(inverse, weights=minutes, minlength=len(unique_key)).astype(np.float32),
        organic=np.bincount(inverse, weights=organic, minlength=len(unique_key)) > 0,
        recommended=np.bincount(inverse, weights=recommended, minlength=len(unique_key)) > 0,
    )


def _codes(
    values: np.ndarray, vocabulary: np.ndarray | None, name: str
) -> tuple[np.ndarray, np.ndarray]:
    if vocabulary is None:
        codes, uniques = pd.factorize(values, sort=True)
        return codes.astype(np.int64), np.asarray(uniques, dtype=object)
    vocabulary = np.asarray(vocabulary, dtype=object)
    codes = pd.Index(vocabulary).get_indexer(values)
    if (codes < 0).any():
        unknown = pd.unique(values[codes < 0])[:5]
        raise ValueError(
            f"{int((codes < 0).sum())} {name} value(s) not in the vocabulary, e.g. {list(unknown)}"
        )
    return codes.astype(np.int64), vocabulary


def states_from_listen_days(
    listen_days: ListenDays, as_of_day: int, betas: tuple[float, ...] = DEFAULT_BETAS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form states at the start of ``as_of_day`` for every pair listened before it.

    Returns ``(user (P,), item (P,), state (P, R) float32)``, pairs sorted by (user, item).
    s_T = Σ_{t_j < T} (1 - beta) beta^(T - 1 - t_j) equals T updates of
    ``update_relationship_state`` from s = 0 (checked against that loop in the tests).
    """
    betas_arr = np.asarray(betas, dtype=np.float64)
    before = listen_days.day < as_of_day
    key = listen_days.pair_key()[before]
    age = (as_of_day - 1 - listen_days.day[before]).astype(np.float64)
    weights = (1.0 - betas_arr) * betas_arr ** age[:, None]  # (n, R)
    if len(key) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros((0, len(betas_arr)), np.float32)
    # Rows are sorted by (pair, day), so each pair is one contiguous run: a segment sum.
    starts = np.concatenate([[0], np.flatnonzero(np.diff(key)) + 1])
    unique_key = key[starts]
    state = np.add.reduceat(weights, starts, axis=0)
    n_items = np.int64(max(listen_days.n_items, 1))
    return unique_key // n_items, unique_key % n_items, state.astype(np.float32)


def _pair_keys(user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Stable int64 pair key (user code in the high 32 bits): vocabularies may grow."""
    return (np.asarray(user, np.int64) << np.int64(32)) | np.asarray(item, np.int64)


class RelationshipStateStore:
    """Sparse relationship states of (user, item) pairs, updated incrementally day by day.

    Each stored pair keeps its state at the start of ``as_of_day`` (lazy decay: reading it
    on a later day multiplies by beta^(days elapsed), which is exactly the update with no
    listen), its first and last listen day and its number of listen days. Pairs live in
    row-aligned numpy arrays found through a sorted key index (no per-pair Python objects,
    so millions of pairs stay cheap).

    Parameters
    ----------
    betas : forgetting factors, each in (0, 1) (the ObservationLayout's by default).
    """

    def __init__(self, betas: tuple[float, ...] = DEFAULT_BETAS) -> None:
        if not betas or not all(0.0 < b < 1.0 for b in betas):
            raise ValueError(f"betas must be non-empty and each in (0, 1), got {betas}")
        self.betas = tuple(float(b) for b in betas)
        self._user_ids: list[str] = []
        self._track_ids: list[str] = []
        self._users: dict[str, int] = {}
        self._items: dict[str, int] = {}
        self._load_arrays(
            np.zeros(0, object), np.zeros(0, object), np.zeros(0, np.int64), np.zeros(0, np.int64),
            np.zeros((0, len(self.betas))), *(np.zeros(0, np.int32) for _ in range(4)),
        )  # fmt: skip
        self.last_day: int | None = None

    def __len__(self) -> int:
        return len(self._keys)

    # -- building ---------------------------------------------------------------------
    @classmethod
    def from_listen_days(
        cls,
        listen_days: ListenDays,
        as_of_day: int | None = None,
        betas: tuple[float, ...] = DEFAULT_BETAS,
    ) -> RelationshipStateStore:
        """Batch build from listen days (closed form), states as of ``as_of_day`` (default: log end)."""
        as_of = listen_days.end_day if as_of_day is None else int(as_of_day)
        store = cls(betas)
        user, item, state = states_from_listen_days(listen_days, as_of, store.betas)
        before = listen_days.day < as_of
        key = listen_days.pair_key()[before]
        days = listen_days.day[before]
        if len(key):
            first_row = np.concatenate([[0], np.flatnonzero(np.diff(key)) + 1])
            counts = np.diff(np.append(first_row, len(key)))
        else:
            first_row = counts = np.zeros(0, np.int64)
        last_row = first_row + counts - 1  # rows are sorted by (pair, day)
        store._load_arrays(
            user_ids=np.asarray(listen_days.user_ids, dtype=object),
            track_ids=np.asarray(listen_days.track_ids, dtype=object),
            user=user,
            item=item,
            state=state,
            as_of=np.full(len(user), as_of, np.int32),
            first=days[first_row],
            last=days[last_row],
            count=counts.astype(np.int32),
        )
        store.last_day = as_of - 1
        return store

    def _load_arrays(self, user_ids, track_ids, user, item, state, as_of, first, last, count):
        self._user_ids = [str(u) for u in user_ids]
        self._track_ids = [str(t) for t in track_ids]
        self._users = {u: i for i, u in enumerate(self._user_ids)}
        self._items = {t: i for i, t in enumerate(self._track_ids)}
        self._user = np.asarray(user, np.int64).copy()
        self._item = np.asarray(item, np.int64).copy()
        self._keys = _pair_keys(self._user, self._item)
        self._state = np.asarray(state, np.float32).reshape(len(self._keys), len(self.betas)).copy()
        self._as_of = np.asarray(as_of, np.int32).copy()
        self._first = np.asarray(first, np.int32).copy()
        self._last = np.asarray(last, np.int32).copy()
        self._count = np.asarray(count, np.int32).copy()
        self._reindex()

    def _reindex(self) -> None:
        self._order = np.argsort(self._keys, kind="stable")
        self._sorted_keys = self._keys[self._order]

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key, -1 when the pair has no history."""
        if not len(self._sorted_keys):
            return np.full(len(keys), -1, np.int64)
        position = np.minimum(np.searchsorted(self._sorted_keys, keys), len(self._sorted_keys) - 1)
        return np.where(self._sorted_keys[position] == keys, self._order[position], -1)

    def _codes_for(
        self, ids, mapping: dict[str, int], vocabulary: list[str], add: bool
    ) -> np.ndarray:
        codes = np.empty(len(ids), np.int64)
        for index, value in enumerate(ids):
            value = str(value)
            code = mapping.get(value, -1)
            if code < 0 and add:
                code = len(vocabulary)
                mapping[value] = code
                vocabulary.append(value)
            codes[index] = code
        return codes

    # -- incremental update -------------------------------------------------------------
    def update_day(self, day: int, user_ids: np.ndarray, track_ids: np.ndarray) -> None:
        """Apply day ``day``'s listens (pairs may repeat); afterwards states are as of ``day + 1``.

        Days must be fed in increasing order; pairs not listened to are decayed lazily.
        """
        if self.last_day is not None and day <= self.last_day:
            raise ValueError(f"days must increase: got {day} after {self.last_day}")
        users = self._codes_for(user_ids, self._users, self._user_ids, add=True)
        items = self._codes_for(track_ids, self._items, self._track_ids, add=True)
        keys = np.unique(_pair_keys(users, items))
        rows = self._rows(keys)
        new = keys[rows < 0]
        if len(new):
            n_old = len(self._keys)
            self._keys = np.concatenate([self._keys, new])
            self._user = np.concatenate([self._user, new >> np.int64(32)])
            self._item = np.concatenate([self._item, new & np.int64(0xFFFFFFFF)])
            self._state = np.concatenate(
                [self._state, np.zeros((len(new), len(self.betas)), np.float32)]
            )
            self._as_of = np.concatenate([self._as_of, np.full(len(new), day, np.int32)])
            self._first = np.concatenate([self._first, np.full(len(new), day, np.int32)])
            self._last = np.concatenate([self._last, np.full(len(new), day, np.int32)])
            self._count = np.concatenate([self._count, np.zeros(len(new), np.int32)])
            rows[rows < 0] = np.arange(n_old, n_old + len(new))
            self._reindex()
        if len(rows):
            betas = np.asarray(self.betas)
            decayed = relationship_after_days(self._state[rows], day - self._as_of[rows], betas)
            self._state[rows] = update_relationship_state(decayed, np.ones(len(rows), bool), betas)
            self._as_of[rows] = day + 1
            self._last[rows] = day
            self._count[rows] += 1
        self.last_day = day

    # -- reading ------------------------------------------------------------------------
    def states(self, user_ids, track_ids, day: int) -> np.ndarray:
        """(B, R) states at the start of ``day`` for given pairs; zeros for pairs with no history."""
        users = self._codes_for(user_ids, self._users, self._user_ids, add=False)
        items = self._codes_for(track_ids, self._items, self._track_ids, add=False)
        return self.states_by_code(users, items, day)

    def states_by_code(self, users: np.ndarray, items: np.ndarray, day: int) -> np.ndarray:
        """Like ``states`` for integer codes (-1 = unknown); any shape (...) -> (..., R)."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        shape = users.shape
        users, items = users.reshape(-1), items.reshape(-1)
        out = np.zeros((len(users), len(self.betas)), np.float32)
        valid = (users >= 0) & (items >= 0)
        rows = np.full(len(users), -1, np.int64)
        rows[valid] = self._rows(_pair_keys(users[valid], items[valid]))
        found = rows >= 0
        if found.any():
            elapsed = day - self._as_of[rows[found]]
            if (elapsed < 0).any():
                raise ValueError(f"day {day} is before some stored state's as_of_day")
            out[found] = relationship_after_days(
                self._state[rows[found]], elapsed, np.asarray(self.betas)
            )
        return out.reshape(*shape, len(self.betas))

    def to_frame(self, day: int | None = None) -> pd.DataFrame:
        """All pairs as a DataFrame (states decayed to ``day``, default: after the last update)."""
        day = (self.last_day + 1 if self.last_day is not None else 0) if day is None else day
        users = np.asarray(self._user_ids, dtype=object)
        items = np.asarray(self._track_ids, dtype=object)
        state = relationship_after_days(self._state, day - self._as_of, np.asarray(self.betas))
        frame = pd.DataFrame(
            {
                "user_id": users[self._user] if len(self) else np.array([], object),
                "track_id": items[self._item] if len(self) else np.array([], object),
                "first_listen_day": self._first,
                "last_listen_day": self._last,
                "n_listen_days": self._count,
            }
        )
        for r, beta in enumerate(self.betas):
            frame[f"s_{beta:g}"] = state[:, r]
        return frame.sort_values(["user_id", "track_id"], ignore_index=True)

    def save(self, uri: str) -> None:
        """Write the store as one parquet file (states decayed to the day after the last update)."""
        table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        table = table.replace_schema_metadata(
            {"betas": ",".join(map(str, self.betas)), "as_of_day": str((self.last_day or -1) + 1)}
        )
        sink = io.BytesIO()
        pq.write_table(table, sink)
        storage.write_bytes(uri, sink.getvalue())

    @classmethod
    def load(cls, uri: str) -> RelationshipStateStore:
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
        meta = table.schema.metadata or {}
        betas = tuple(float(b) for b in meta[b"betas"].decode().split(","))
        as_of = int(meta[b"as_of_day"].decode())
        frame = table.to_pandas()
        store = cls(betas)
        user, user_vocab = _codes(frame["user_id"].to_numpy(), None, "user_id")
        item, item_vocab = _codes(frame["track_id"].to_numpy(), None, "track_id")
        store._load_arrays(
            user_ids=user_vocab,
            track_ids=item_vocab,
            user=user,
            item=item,
            state=frame[[f"s_{b:g}" for b in betas]].to_numpy(np.float32),
            as_of=np.full(len(frame), as_of, np.int32),
            first=frame["first_listen_day"].to_numpy(),
            last=frame["last_listen_day"].to_numpy(),
            count=frame["n_listen_days"].to_numpy(),
        )
        store.last_day = as_of - 1
        return store
