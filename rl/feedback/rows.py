"""The one place a feedback-log row is built: a decision row as a dict (the service's
feedback path), decision rows as columns (the importers, the simulator), play rows of an
imported history, and the organic rows those plays add up to.

Where it sits: the schemas and their rules live in rl/feedback/schema.py; writers
(rl/feedback/log.py) validate what these builders return, so a builder only types and
derives (``chosen_track_id`` from the candidates, ``hour``/``weekday`` from the
timestamp), it does not judge.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rl.feedback.schema import DECISION_SCHEMA, ORGANIC_SCHEMA, PLAY_SCHEMA

#: Decision fields a caller may leave out, with what the builder puts there.
_DECISION_DEFAULTS: dict[str, Any] = {"arm": "", "request_id": None, "candidate_sources": None}
_DERIVED = ("chosen_track_id", "hour", "weekday")


def decision_row(
    *,
    user_id: str,
    session_id: str,
    day: int,
    position: int,
    timestamp: int,
    current_track_id: str,
    candidate_track_ids: Sequence[str],
    candidate_relationship: Sequence[float] | np.ndarray,  # (K, R) or (K*R,)
    user_taste: Sequence[float] | np.ndarray,  # (D,)
    chosen_index: int,
    behaviour_logp: float,
    listened: bool,
    listen_fraction: float,
    liked: bool,
    skip_level: int,
    reward: float,
    source: str,
    policy_version: str,
    arm: str = "",
    request_id: str | None = None,
    hour: int | None = None,
    weekday: int | None = None,
    candidate_sources: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One decision row as a dict in DECISION_SCHEMA's field order.

    ``chosen_track_id`` is ``candidate_track_ids[chosen_index]`` (None when the index is
    out of range, which validation then rejects); ``hour``/``weekday`` default to the
    timestamp's UTC hour and weekday. numpy arrays become plain lists. ``candidate_sources``
    (one pool source name per candidate, rl/decision/candidate_pool.py) is optional."""
    if hour is None or weekday is None:
        struct = time.gmtime(int(timestamp))
        hour = struct.tm_hour if hour is None else hour
        weekday = struct.tm_wday if weekday is None else weekday
    candidates = [str(track) for track in candidate_track_ids]
    in_range = 0 <= int(chosen_index) < len(candidates)
    row = {
        "user_id": user_id,
        "session_id": session_id,
        "day": int(day),
        "position": int(position),
        "timestamp": int(timestamp),
        "hour": int(hour),
        "weekday": int(weekday),
        "current_track_id": current_track_id,
        "candidate_track_ids": candidates,
        "candidate_relationship": np.asarray(candidate_relationship, np.float64)
        .reshape(-1)
        .tolist(),
        "user_taste": np.asarray(user_taste, np.float64).reshape(-1).tolist(),
        "chosen_index": int(chosen_index),
        "chosen_track_id": candidates[int(chosen_index)] if in_range else None,
        "behaviour_logp": float(behaviour_logp),
        "listened": bool(listened),
        "listen_fraction": float(listen_fraction),
        "liked": bool(liked),
        "skip_level": int(skip_level),
        "reward": float(reward),
        "source": source,
        "policy_version": policy_version,
        "arm": arm,
        "request_id": request_id,
        "candidate_sources": None
        if candidate_sources is None
        else [str(source) for source in candidate_sources],
    }
    assert list(row) == DECISION_SCHEMA.names
    return row


def _list_column(values: Any, value_type: pa.DataType, n: int) -> pa.Array:
    """A list column from a ListArray, a 2-D array (n, width) or a sequence of sequences."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if isinstance(values, np.ndarray) and values.ndim == 2:
        flat = pa.array(values.reshape(-1), type=value_type)
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * values.shape[1])
        return pa.ListArray.from_arrays(offsets, flat)
    return pa.array(list(values), type=pa.list_(value_type))


def _column(values: Any, field: pa.Field, n: int) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if values is None or isinstance(values, (str, int, float, bool, np.generic)):
        return pa.array([values] * n, type=field.type)  # a constant, broadcast
    return pa.array(np.asarray(values) if not isinstance(values, list) else values, type=field.type)


def decision_table(columns: Mapping[str, Any]) -> pa.Table:
    """Decision rows from columns, vectorised: each value is an array of n values, a
    pyarrow array, or a scalar broadcast to every row; list fields also take a 2-D
    array (n, width). ``chosen_track_id`` (from the candidates), ``hour`` and ``weekday``
    (UTC, from ``timestamp``), ``arm`` (""), ``request_id`` and ``candidate_sources`` (null)
    may be left out.
    Raises ValueError naming missing or unknown columns; values are checked by the writer."""
    unknown = sorted(set(columns) - set(DECISION_SCHEMA.names))
    required = set(DECISION_SCHEMA.names) - set(_DECISION_DEFAULTS) - set(_DERIVED)
    missing = sorted(required - set(columns))
    if missing or unknown:
        raise ValueError(f"decision columns: missing {missing}, unknown {unknown}")
    n = len(columns["user_id"])
    arrays: dict[str, Any] = {}
    for field in DECISION_SCHEMA:
        if field.name == "candidate_sources" and columns.get(field.name) is None:
            arrays[field.name] = pa.nulls(n, field.type)
        elif field.name in (
            "candidate_track_ids",
            "candidate_relationship",
            "user_taste",
            "candidate_sources",
        ):
            arrays[field.name] = _list_column(columns[field.name], field.type.value_type, n)
        elif field.name in columns:
            arrays[field.name] = _column(columns[field.name], field, n)
        elif field.name in _DECISION_DEFAULTS:
            arrays[field.name] = _column(_DECISION_DEFAULTS[field.name], field, n)
    timestamp = np.asarray(arrays["timestamp"], np.int64)
    if "hour" not in arrays:
        arrays["hour"] = pa.array(((timestamp // 3_600) % 24).astype(np.int8))
    if "weekday" not in arrays:
        # 1970-01-01 was a Thursday (weekday 3).
        arrays["weekday"] = pa.array(((timestamp // 86_400 + 3) % 7).astype(np.int8))
    if "chosen_track_id" not in arrays:
        candidates = arrays["candidate_track_ids"]
        if isinstance(candidates, pa.ChunkedArray):
            candidates = candidates.combine_chunks()
        chosen = np.asarray(arrays["chosen_index"], np.int64)
        lengths = pc.list_value_length(candidates).to_numpy(zero_copy_only=False)
        in_range = (chosen >= 0) & (chosen < lengths)
        flat_index = candidates.offsets.to_numpy()[:-1] + np.where(in_range, chosen, 0)
        picked = candidates.values.take(pa.array(np.where(in_range, flat_index, 0)))
        arrays["chosen_track_id"] = pc.if_else(
            pa.array(in_range), picked, pa.scalar(None, pa.string())
        )
    ordered = [
        arrays[field.name].cast(field.type)
        if arrays[field.name].type != field.type
        else arrays[field.name]
        for field in DECISION_SCHEMA
    ]
    return pa.Table.from_arrays(ordered, schema=DECISION_SCHEMA)


def play_table(columns: Mapping[str, Any]) -> pa.Table:
    """Play rows (PLAY_SCHEMA) from columns; nullable fields may be left out (null), and
    ``hour``/``weekday`` are derived from ``timestamp`` (UTC) when absent."""
    optional = {field.name for field in PLAY_SCHEMA if field.nullable} | {"hour", "weekday"}
    unknown = sorted(set(columns) - set(PLAY_SCHEMA.names))
    missing = sorted(set(PLAY_SCHEMA.names) - optional - set(columns))
    if missing or unknown:
        raise ValueError(f"play columns: missing {missing}, unknown {unknown}")
    n = len(columns["user_id"])
    timestamp = np.asarray(columns["timestamp"], np.int64)
    derived = {
        "hour": ((timestamp // 3_600) % 24).astype(np.int8),
        "weekday": ((timestamp // 86_400 + 3) % 7).astype(np.int8),
    }
    arrays = []
    for field in PLAY_SCHEMA:
        values = columns.get(field.name, derived.get(field.name))
        array = pa.nulls(n, field.type) if values is None else _column(values, field, n)
        arrays.append(array.cast(field.type) if array.type != field.type else array)
    return pa.Table.from_arrays(arrays, schema=PLAY_SCHEMA)


def organic_from_plays(plays: pa.Table) -> pa.Table:
    """The streamed plays (>= 30 s) summed per (user, day, track) as ORGANIC_SCHEMA rows:
    streams = number of streams, minutes = their play time (0 when the source has none)."""
    streamed = plays.filter(plays["streamed"]).select(["user_id", "day", "track_id", "ms_played"])
    minutes = pc.divide(pc.cast(streamed["ms_played"].fill_null(0), pa.float64()), 60_000.0)
    streamed = streamed.append_column("minutes", minutes).drop(["ms_played"])
    grouped = streamed.group_by(["user_id", "day", "track_id"]).aggregate(
        [("minutes", "sum"), ("minutes", "count")]
    )
    return pa.Table.from_arrays(
        [
            grouped["user_id"],
            grouped["day"],
            grouped["track_id"],
            grouped["minutes_sum"].cast(pa.float32()),
            grouped["minutes_count"].cast(pa.int32()),
        ],
        schema=ORGANIC_SCHEMA,
    )
