"""The logged-feedback schema: one row per decision, plus organic listens per day.

Where it sits: the simulator (rl/simulator), the serving ingress (services/) and the MSSD
importer (rl/feedback/importers/mssd.py) produce decision rows; rl/feedback/log.py validates them with this
module and writes parquet partitioned by day; rl/feedback/offline_steps.py and training read them.

A decision row is a recommendation shown and the user's response to it:

    user_id, session_id          str   who, and which listening session
    day, position                int32 day index since the log's start; 0-based step in session
    timestamp                    int64 seconds since the Unix epoch (UTC)
    hour, weekday                int8  context: 0..23 and 0..6 (Monday = 0)
    current_track_id             str   the song playing when the decision was made
    candidate_track_ids          list<str>     the kNN candidates shown to the policy (1..k)
    candidate_relationship       list<float32> user's relationship state with each candidate
                                               at decision time, K*R flattened (candidate-major)
    user_taste                   list<float32> the user's taste vector (D) at decision time
    chosen_index, chosen_track_id      the candidate played; chosen_track_id must equal
                                       candidate_track_ids[chosen_index]
    behaviour_logp               float32 log pi_b(chosen | obs) of the policy that served it (<= 0)
    listened                     bool  streamed >= 30 s (the paper's c > 0)
    listen_fraction              float32 in [0, 1]
    liked                        bool
    skip_level                   int8  0 immediate skip, 1 early, 2 late, 3 played through
    reward                       float32 the session reward (rl/feedback/reward.py) under the writer's config
    source                       str   "simulator" | "service" | "mssd"
    policy_version, arm          str   policy that served; A/B arm ("" when none)
    request_id                   str or null   serving request id (null in simulation)
    candidate_sources            list<str> or null   where each candidate came from (one of
                                 rl/decision/candidate_pool.py POOL_SOURCES per candidate:
                                 song, taste, relationship, popular, sticky); null in logs
                                 written before multi-source pools (reads as null)

Organic rows (listens the user started without a recommendation): user_id, day, track_id,
minutes (float32 >= 0), streams (int32 >= 1).

Play rows (``PLAY_SCHEMA``): one row per play of an imported real listening history
(rl/feedback/importers/), kept at play level so sessions, skips and positions survive:
user_id (a pseudonym, never the source's account name), session_id, day, position,
timestamp, hour, weekday, track_id (the catalog's Spotify id when matched, else the
source's own id), in_catalog, ms_played (null when the source has no play time),
streamed (>= 30 s), skipped (null when the source does not record skips), shuffle,
reason_start, reason_end (Spotify's codes, else null), source. Importers write the same
plays aggregated per user, day and track as organic rows too, so readers of organic
listens (rl/longterm/listen_days.py) see imported histories without change.

``validate_table`` checks a whole pyarrow table vectorised and splits it into valid rows
and rejected rows with a reason each; ``table_from_rows`` converts dict rows, turning a row
that cannot even be typed (missing field, wrong type) into a rejection instead of an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SOURCES: tuple[str, ...] = ("simulator", "service", "mssd")

# Who, in which session, and when: the leading columns of decision rows and of imported plays.
_SESSION_FIELDS = [
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("session_id", pa.string(), nullable=False),
    pa.field("day", pa.int32(), nullable=False),
    pa.field("position", pa.int32(), nullable=False),
    pa.field("timestamp", pa.int64(), nullable=False),
    pa.field("hour", pa.int8(), nullable=False),
    pa.field("weekday", pa.int8(), nullable=False),
]

DECISION_SCHEMA = pa.schema(
    [
        *_SESSION_FIELDS,
        pa.field("current_track_id", pa.string(), nullable=False),
        pa.field("candidate_track_ids", pa.list_(pa.string()), nullable=False),
        pa.field("candidate_relationship", pa.list_(pa.float32()), nullable=False),
        pa.field("user_taste", pa.list_(pa.float32()), nullable=False),
        pa.field("chosen_index", pa.int32(), nullable=False),
        pa.field("chosen_track_id", pa.string(), nullable=False),
        pa.field("behaviour_logp", pa.float32(), nullable=False),
        pa.field("listened", pa.bool_(), nullable=False),
        pa.field("listen_fraction", pa.float32(), nullable=False),
        pa.field("liked", pa.bool_(), nullable=False),
        pa.field("skip_level", pa.int8(), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("policy_version", pa.string(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=True),
        pa.field("candidate_sources", pa.list_(pa.string()), nullable=True),
    ]
)

#: Fields added after logs were written: a table without them reads as null there.
ADDED_FIELDS: frozenset[str] = frozenset({"candidate_sources"})

PLAY_SOURCES: tuple[str, ...] = ("spotify", "spotify-extended", "lastfm", "listenbrainz", "mssd")

PLAY_SCHEMA = pa.schema(
    [
        *_SESSION_FIELDS,
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("in_catalog", pa.bool_(), nullable=False),
        pa.field("ms_played", pa.int64(), nullable=True),
        pa.field("streamed", pa.bool_(), nullable=False),
        pa.field("skipped", pa.bool_(), nullable=True),
        pa.field("shuffle", pa.bool_(), nullable=True),
        pa.field("reason_start", pa.string(), nullable=True),
        pa.field("reason_end", pa.string(), nullable=True),
        pa.field("source", pa.string(), nullable=False),
    ]
)

ORGANIC_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("day", pa.int32(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("minutes", pa.float32(), nullable=False),
        pa.field("streams", pa.int32(), nullable=False),
    ]
)


class LogSchemaError(ValueError):
    """A whole batch does not fit the schema (missing/extra columns, uncastable types)."""


@dataclass(frozen=True)
class Rejection:
    """A row refused by validation, with every reason it failed."""

    row: dict[str, Any]
    reason: str


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder and cast a table to ``schema``; raise LogSchemaError on column mismatches."""
    absent = [name for name in schema.names if name not in table.column_names]
    missing = [name for name in absent if name not in ADDED_FIELDS]
    extra = [name for name in table.column_names if name not in schema.names]
    if missing or extra:
        raise LogSchemaError(f"columns do not match the schema: missing {missing}, unknown {extra}")
    columns = []
    for field_ in schema:
        if field_.name in absent:  # written before the field existed
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, field_.type)]))
            continue
        column = table.column(field_.name)
        if column.type != field_.type:
            try:
                column = column.cast(field_.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise LogSchemaError(
                    f"column {field_.name!r}: cannot cast {column.type} to {field_.type}: {exc}"
                ) from exc
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema.with_metadata(None))


def _null_checks(table: pa.Table, schema: pa.Schema) -> list[tuple[np.ndarray, str]]:
    checks = []
    for field_ in schema:
        if not field_.nullable and table.column(field_.name).null_count:
            checks.append(
                (
                    table.column(field_.name).is_null().to_numpy(zero_copy_only=False),
                    f"{field_.name} is null",
                )
            )
    return checks


def _np(column: pa.ChunkedArray, fill: Any = 0) -> np.ndarray:
    return column.fill_null(fill).to_numpy(zero_copy_only=False)


def _list_lengths(column: pa.ChunkedArray) -> np.ndarray:
    return _np(pc.list_value_length(column), 0).astype(np.int64)


def _row_all_finite(column: pa.ChunkedArray, lengths: np.ndarray) -> np.ndarray:
    """(n,) bool: every value of each float list row is finite (null rows count as finite)."""
    values = _np(pc.list_flatten(column.fill_null([])), 0.0)
    if np.isfinite(values).all():  # the usual case: skip the per-row reduction
        return np.ones(len(lengths), bool)
    bad = (~np.isfinite(values.astype(np.float64))).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return np.add.reduceat(np.append(bad, 0), offsets[:-1]) * (lengths > 0) == 0


def decision_checks(
    table: pa.Table, k: int | None = None, n_betas: int | None = None
) -> list[tuple[np.ndarray, str]]:
    """Every rule a decision row must meet, as (bad-row mask, reason) pairs."""
    checks = _null_checks(table, DECISION_SCHEMA)
    n = table.num_rows

    def add(mask: np.ndarray, reason: str) -> None:
        if mask.any():
            checks.append((mask, reason))

    add(_np(table["day"]) < 0, "day must be >= 0")
    add(_np(table["position"]) < 0, "position must be >= 0")
    add(_np(table["timestamp"]) < 0, "timestamp must be >= 0 (seconds since epoch)")
    hour = _np(table["hour"])
    add((hour < 0) | (hour > 23), "hour must be in 0..23")
    weekday = _np(table["weekday"])
    add((weekday < 0) | (weekday > 6), "weekday must be in 0..6")
    for name in ("user_id", "session_id", "current_track_id", "chosen_track_id"):
        add(_np(pc.utf8_length(table[name]), 1) == 0, f"{name} is empty")

    n_candidates = _list_lengths(table["candidate_track_ids"])
    add(n_candidates == 0, "candidate_track_ids is empty")
    if k is not None:
        add(n_candidates > k, f"more than k={k} candidates")
    flat_candidates = pc.list_flatten(table["candidate_track_ids"].fill_null([]))
    add(
        np.add.reduceat(
            np.append(_np(flat_candidates.is_null(), False).astype(np.int64), 0),
            np.concatenate([[0], np.cumsum(n_candidates)])[:-1],
        )
        * (n_candidates > 0)
        > 0,
        "candidate_track_ids holds a null id",
    )
    chosen = _np(table["chosen_index"], -1).astype(np.int64)
    in_range = (chosen >= 0) & (chosen < n_candidates)
    add(~in_range, "chosen_index out of range of candidate_track_ids")
    offsets = np.concatenate([[0], np.cumsum(n_candidates)])[:-1]
    flat_index = np.where(in_range, offsets + np.maximum(chosen, 0), 0)
    if len(flat_candidates):
        picked = flat_candidates.take(pa.array(flat_index)).fill_null("")
        mismatch = ~_np(pc.equal(picked, table["chosen_track_id"].fill_null("")), False)
        add(in_range & mismatch, "chosen_track_id != candidate_track_ids[chosen_index]")

    sources = table["candidate_sources"]
    if sources.null_count < n:
        from rl.decision.candidate_pool import POOL_SOURCES

        n_sources = _list_lengths(sources)
        present = ~sources.is_null().to_numpy(zero_copy_only=False)
        add(
            present & (n_sources != n_candidates),
            "candidate_sources must have one entry per candidate",
        )
        flat_sources = pc.list_flatten(sources.fill_null([]))
        if len(flat_sources):
            known = pc.is_in(flat_sources, value_set=pa.array(POOL_SOURCES)).fill_null(False)
            unknown = (~_np(known, True)).astype(np.int64)
            offsets_s = np.concatenate([[0], np.cumsum(n_sources)])[:-1]
            per_row = np.add.reduceat(np.append(unknown, 0), offsets_s) * (n_sources > 0)
            add(per_row > 0, f"candidate_sources holds a name outside {list(POOL_SOURCES)}")
    n_relationship = _list_lengths(table["candidate_relationship"])
    if n_betas is not None:
        add(
            (n_candidates > 0) & (n_relationship != n_candidates * n_betas),
            f"candidate_relationship must hold len(candidates) * {n_betas} values",
        )
    else:
        add(
            (n_candidates > 0) & (n_relationship % np.maximum(n_candidates, 1) != 0),
            "candidate_relationship length is not a multiple of len(candidates)",
        )
    add(
        ~_row_all_finite(table["candidate_relationship"], n_relationship),
        "candidate_relationship has NaN/inf",
    )
    n_taste = _list_lengths(table["user_taste"])
    add(n_taste == 0, "user_taste is empty")
    add(~_row_all_finite(table["user_taste"], n_taste), "user_taste has NaN/inf")

    logp = _np(table["behaviour_logp"], 0.0).astype(np.float64)
    add(~np.isfinite(logp) | (logp > 1e-6), "behaviour_logp must be finite and <= 0")
    fraction = _np(table["listen_fraction"], 0.0).astype(np.float64)
    add(
        ~np.isfinite(fraction) | (fraction < 0) | (fraction > 1),
        "listen_fraction must be in [0, 1]",
    )
    skip = _np(table["skip_level"])
    add((skip < 0) | (skip > 3), "skip_level must be in 0..3")
    add(~np.isfinite(_np(table["reward"], 0.0).astype(np.float64)), "reward must be finite")
    add(
        ~_np(pc.is_in(table["source"], pa.array(SOURCES)), True), f"source must be one of {SOURCES}"
    )
    assert all(len(mask) == n for mask, _ in checks)
    return checks


def organic_checks(table: pa.Table) -> list[tuple[np.ndarray, str]]:
    """Rules of an organic-listen row."""
    checks = _null_checks(table, ORGANIC_SCHEMA)
    minutes = _np(table["minutes"], 0.0).astype(np.float64)
    for mask, reason in (
        (_np(table["day"]) < 0, "day must be >= 0"),
        (~np.isfinite(minutes) | (minutes < 0), "minutes must be finite and >= 0"),
        (_np(table["streams"], 1) < 1, "streams must be >= 1"),
        (_np(pc.utf8_length(table["track_id"]), 1) == 0, "track_id is empty"),
        (_np(pc.utf8_length(table["user_id"]), 1) == 0, "user_id is empty"),
    ):
        if mask.any():
            checks.append((mask, reason))
    return checks


def play_checks(table: pa.Table) -> list[tuple[np.ndarray, str]]:
    """Rules of a play row."""
    checks = _null_checks(table, PLAY_SCHEMA)
    hour, weekday = _np(table["hour"]), _np(table["weekday"])
    for mask, reason in (
        (_np(table["day"]) < 0, "day must be >= 0"),
        (_np(table["position"]) < 0, "position must be >= 0"),
        (_np(table["timestamp"]) < 0, "timestamp must be >= 0 (seconds since epoch)"),
        ((hour < 0) | (hour > 23), "hour must be in 0..23"),
        ((weekday < 0) | (weekday > 6), "weekday must be in 0..6"),
        (_np(table["ms_played"], 0) < 0, "ms_played must be >= 0"),
        (_np(pc.utf8_length(table["track_id"]), 1) == 0, "track_id is empty"),
        (_np(pc.utf8_length(table["user_id"]), 1) == 0, "user_id is empty"),
        (_np(pc.utf8_length(table["session_id"]), 1) == 0, "session_id is empty"),
        (
            ~_np(pc.is_in(table["source"], pa.array(PLAY_SOURCES)), True),
            f"source must be one of {PLAY_SOURCES}",
        ),
    ):
        if mask.any():
            checks.append((mask, reason))
    return checks


def split_valid(
    table: pa.Table, checks: list[tuple[np.ndarray, str]]
) -> tuple[pa.Table, list[Rejection]]:
    """Apply (mask, reason) checks: the valid rows as a table, the others as Rejections."""
    if not checks:
        return table, []
    bad = np.zeros(table.num_rows, bool)
    for mask, _ in checks:
        bad |= mask
    bad_rows = np.flatnonzero(bad)
    reasons: dict[int, list[str]] = {int(row): [] for row in bad_rows}
    for mask, reason in checks:
        for row in np.flatnonzero(mask):
            reasons[int(row)].append(reason)
    rejected_rows = table.take(pa.array(bad_rows)).to_pylist()
    rejections = [
        Rejection(row=row, reason="; ".join(reasons[int(index)]))
        for row, index in zip(rejected_rows, bad_rows, strict=True)
    ]
    return table.filter(pa.array(~bad)), rejections


def validate_table(
    table: pa.Table, k: int | None = None, n_betas: int | None = None
) -> tuple[pa.Table, list[Rejection]]:
    """Conform a decision table to the schema and split it into (valid, rejected)."""
    table = _conform(table, DECISION_SCHEMA)
    return split_valid(table, decision_checks(table, k=k, n_betas=n_betas))


def validate_organic_table(table: pa.Table) -> tuple[pa.Table, list[Rejection]]:
    table = _conform(table, ORGANIC_SCHEMA)
    return split_valid(table, organic_checks(table))


def validate_play_table(table: pa.Table) -> tuple[pa.Table, list[Rejection]]:
    table = _conform(table, PLAY_SCHEMA)
    return split_valid(table, play_checks(table))


def table_from_rows(
    rows: Sequence[dict[str, Any]], schema: pa.Schema = DECISION_SCHEMA
) -> tuple[pa.Table, list[Rejection]]:
    """Type dict rows into a table; rows with missing/unknown fields or wrong types are
    rejected (with the reason) instead of failing the batch. Optional fields (nullable)
    may be left out."""
    typed: list[dict[str, Any]] = []
    rejections: list[Rejection] = []
    required = {field_.name for field_ in schema if not field_.nullable}
    for row in rows:
        if not isinstance(row, dict):
            rejections.append(Rejection(row={"value": repr(row)}, reason="row is not a dict"))
            continue
        missing = sorted(required - row.keys())
        unknown = sorted(row.keys() - set(schema.names))
        if missing or unknown:
            reason = "; ".join(
                [f"missing field(s) {missing}"] * bool(missing)
                + [f"unknown field(s) {unknown}"] * bool(unknown)
            )
            rejections.append(Rejection(row=dict(row), reason=reason))
            continue
        typed.append(row)
    try:
        return pa.Table.from_pylist(typed, schema=schema), rejections
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        pass
    # Some row does not type: find which, one by one (only on this rare path).
    good = []
    for row in typed:
        try:
            pa.Table.from_pylist([row], schema=schema)
            good.append(row)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            rejections.append(Rejection(row=dict(row), reason=f"wrong type: {exc}"))
    return pa.Table.from_pylist(good, schema=schema), rejections


def validate_rows(
    rows: Sequence[dict[str, Any]], k: int | None = None, n_betas: int | None = None
) -> tuple[pa.Table, list[Rejection]]:
    """Dict decision rows -> (valid table, every rejection with its reason)."""
    table, rejections = table_from_rows(rows, DECISION_SCHEMA)
    valid, more = validate_table(table, k=k, n_betas=n_betas)
    return valid, rejections + more
