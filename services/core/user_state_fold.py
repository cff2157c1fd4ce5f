"""The user state as a function of the decision log: replay a user's rows in order.

Where it sits: ``encore user-state rebuild`` and the service's start
(services/user_state_rebuild.py) run ``fold_user_rows`` per user, in Ray Data's
``groupby(...).map_groups`` or over a pyarrow table. It replays exactly what live feedback
did (``apply_listen``, services/core/user_state.py): rows ordered by (timestamp, position,
request_id); every row takes its session position and joins the user's recent
decisions; a listened row moves the taste toward the chosen song's latent and marks the
relationship on the row's day. Pure pandas/numpy.

Equal to the live state whenever feedback reached the service in decision order (the taste
EMA depends on the order of listens; two listens of one user answered in the other order
give a slightly different taste).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from services.core.user_state import RelationshipEntry, UserState, apply_listen

FOLD_COLUMNS = [
    "user_id",
    "session_id",
    "position",
    "timestamp",
    "day",
    "current_track_id",
    "candidate_track_ids",
    "chosen_index",
    "chosen_track_id",
    "listened",
    "policy_version",
    "arm",
    "request_id",
]
"""The decision-log columns the fold reads."""


def fold_user_rows(
    rows: pd.DataFrame,
    row_of: Mapping[str, int],
    latents: np.ndarray,
    default_taste: np.ndarray,
    taste_rate: float,
    betas: np.ndarray,
    max_tracks: int | None = None,
) -> UserState:
    """One user's state after replaying ``rows`` (their decision rows, any order).

    ``row_of`` / ``latents``: the served catalog's track id -> row and (N, D) latents; a
    chosen song no longer in the catalog still counts as a listen but leaves the taste."""
    rows = rows.sort_values(["timestamp", "position", "request_id"], kind="stable")
    state = UserState(taste=np.asarray(default_taste, np.float32).copy())
    for row in rows.itertuples(index=False):
        session, position = str(row.session_id), int(row.position)
        state.positions[session] = max(state.positions.get(session, 0), position + 1)
        state.recent.append(
            {
                "request_id": row.request_id,
                "timestamp": int(row.timestamp),
                "session_id": session,
                "position": position,
                "current_track_id": row.current_track_id,
                "candidate_track_ids": [str(t) for t in row.candidate_track_ids],
                "chosen_track_id": row.chosen_track_id,
                "policy_version": row.policy_version,
                "arm": row.arm,
            }
        )
        if bool(row.listened):
            catalog_row = row_of.get(row.chosen_track_id)
            latent = None if catalog_row is None else latents[catalog_row]
            apply_listen(
                state, row.chosen_track_id, latent, int(row.day), taste_rate, betas, max_tracks
            )
    return state


def users_from_frame(frame: pd.DataFrame, **fold: Any) -> Iterator[tuple[str, UserState]]:
    """``fold_user_rows`` for every user of a frame of decision rows."""
    for user_id, rows in frame.groupby("user_id", sort=True):
        yield str(user_id), fold_user_rows(rows, **fold)


def state_to_record(user_id: str, state: UserState) -> dict[str, Any]:
    """A flat, Arrow-friendly record of a user's state (what Ray Data carries)."""
    import json

    tracks = list(state.relationships)
    entries = [state.relationships[t] for t in tracks]
    return {
        "user_id": user_id,
        "taste": np.asarray(state.taste, np.float32).tolist(),
        "listens": state.listens,
        "tracks": tracks,
        "states": [float(v) for e in entries for v in e.state],
        "days": [e.day for e in entries],
        "listened_today": [e.listened_today for e in entries],
        "sessions": list(state.positions),
        "positions": list(state.positions.values()),
        "recent": json.dumps(list(state.recent)),
    }


def state_from_record(record: Mapping[str, Any], n_betas: int) -> tuple[str, UserState]:
    import json

    states = np.asarray(record["states"], np.float32).reshape(-1, n_betas)
    state = UserState(taste=np.asarray(record["taste"], np.float32), listens=int(record["listens"]))
    for i, track in enumerate(record["tracks"]):
        state.relationships[str(track)] = RelationshipEntry(
            states[i].copy(), int(record["days"][i]), bool(record["listened_today"][i])
        )
    state.positions = {
        str(s): int(p) for s, p in zip(record["sessions"], record["positions"], strict=True)
    }
    state.recent.extend(json.loads(record["recent"]))
    return str(record["user_id"]), state
