"""Importer of the real MSSD session rows (Spotify's Music Streaming Sessions Dataset).

Where it sits: `encore import-mssd` writes the real rows into the feedback-log schema
(source = "mssd") through ``FeedbackLogWriter``; the simulator calibrates its skip levels
against ``mssd_skip_shares``.

Skip level. MSSD's flags are cumulative: skip_1 (played very briefly) implies skip_2
(briefly) implies skip_3 (most of the track not played); not_skipped means played to the
end. In session_log_1180.csv every row with skip_1 also has skip_2 and skip_3, and every
row with skip_2 has skip_3. The level is therefore the FIRST true flag:
skip_1 -> 0 (immediate), skip_2 -> 1 (early), skip_3 -> 2 (late), otherwise 3 (played
through). 17 of the 1,180 rows have all four flags false (skipped after the skip_3 mark
but not played to the very end); the rule counts them as played through.

Listen fraction (documented mapping; MSSD has no play time): the middle of the
simulator's listen-fraction bin for the level (``SimulatorConfig.listen_fraction_edges``,
default 0.05 / 0.35 / 0.95): level 0 -> 0.025, 1 -> 0.20, 2 -> 0.65, 3 -> 1.0.
``listened`` (a >= 30 s stream) is level >= 2; MSSD has no likes, so ``liked`` is False.

Ids. MSSD has no user ids: one session is one user (``user_id`` = "mssd:" + session id).
MSSD tracks (``t_...`` ids) are not in the Spotify catalog and have no latents. A row logs
the track played, not a choice among candidates, so ``candidate_track_ids`` is the played
track alone (chosen_index 0, behaviour_logp 0 = a logged, not a randomised, choice: these
rows carry no propensities for off-policy estimates). ``current_track_id`` is the
previous track of the same session when the sample holds it, else "mssd:unknown".
``candidate_relationship`` and ``user_taste`` are zeros (no multi-day history, no
latents). Offline conversion (rl/feedback/offline_steps.py) therefore rejects MSSD rows unless told
how to handle unknown tracks; they serve calibration and reward statistics.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rl import paths, storage
from rl.decision.observation import DEFAULT_BETAS
from rl.feedback.reward import SKIP_LEVEL_NAMES, RewardConfig, compute_reward
from rl.feedback.schema import DECISION_SCHEMA

MSSD_FILE = "session_log_1180.csv"
UNKNOWN_CURRENT = "mssd:unknown"
#: Listen fraction per skip level (middle of each of the simulator's bins).
LISTEN_FRACTION_OF_LEVEL: tuple[float, float, float, float] = (0.025, 0.20, 0.65, 1.0)
REQUIRED_COLUMNS = (
    "session_id", "session_position", "track_id_clean", "skip_1", "skip_2", "skip_3",
    "not_skipped", "hour_of_day", "date",
)  # fmt: skip


def default_mssd_uri() -> str:
    return os.path.join(paths.default_mssd_dir(), MSSD_FILE)


def load_mssd(uri: str | None = None) -> pd.DataFrame:
    """Read the MSSD CSV (any storage URI); raises naming missing columns."""
    uri = uri or default_mssd_uri()
    import io

    frame = pd.read_csv(io.BytesIO(storage.read_bytes(uri)))
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{uri}: missing MSSD column(s) {missing}")
    return frame


def _as_bool(column: pd.Series) -> np.ndarray:
    if column.dtype == bool:
        return column.to_numpy()
    return column.astype(str).str.strip().str.lower().isin(("true", "1")).to_numpy()


def skip_levels(frame: pd.DataFrame) -> np.ndarray:
    """(n,) int8 skip level: the first true of skip_1, skip_2, skip_3, else 3."""
    return np.select(
        [_as_bool(frame["skip_1"]), _as_bool(frame["skip_2"]), _as_bool(frame["skip_3"])],
        [0, 1, 2],
        default=3,
    ).astype(np.int8)


def mssd_skip_shares(uri: str | None = None) -> dict[str, float]:
    """Shares of skip_1 / skip_2 / skip_3 / not_skipped levels in the real rows."""
    counts = np.bincount(skip_levels(load_mssd(uri)), minlength=4)
    return {
        name: float(count / counts.sum())
        for name, count in zip(SKIP_LEVEL_NAMES, counts, strict=True)
    }


def mssd_to_table(
    frame: pd.DataFrame,
    reward_config: RewardConfig | None = None,
    n_betas: int = len(DEFAULT_BETAS),
    latent_dim: int = 5,
) -> pa.Table:
    """MSSD rows -> decision rows in DECISION_SCHEMA (see the module docstring)."""
    frame = frame.sort_values(["session_id", "session_position"]).reset_index(drop=True)
    level = skip_levels(frame)
    fraction = np.asarray(LISTEN_FRACTION_OF_LEVEL, np.float32)[level]
    liked = np.zeros(len(frame), bool)
    track = frame["track_id_clean"].astype(str).to_numpy()
    session = frame["session_id"].astype(str).to_numpy()
    position = frame["session_position"].astype(int).to_numpy()
    previous_present = np.zeros(len(frame), bool)
    previous_present[1:] = (session[1:] == session[:-1]) & (position[1:] == position[:-1] + 1)
    current = np.where(previous_present, np.roll(track, 1), UNKNOWN_CURRENT)
    dates = pd.to_datetime(frame["date"])
    day = (dates - dates.min()).dt.days.to_numpy()
    hour = frame["hour_of_day"].astype(int).to_numpy()
    midnight = (dates - pd.Timestamp("1970-01-01")).dt.total_seconds().astype(np.int64).to_numpy()
    rows: dict[str, Any] = {
        "user_id": np.char.add("mssd:", session.astype(str)),
        "session_id": session,
        "day": day.astype(np.int32),
        "position": (position - 1).astype(np.int32),
        # MSSD gives the hour only: a track every ~3.5 minutes within it keeps the order.
        "timestamp": midnight + hour * 3_600 + (position - 1) * 210,
        "hour": hour.astype(np.int8),
        "weekday": dates.dt.weekday.to_numpy().astype(np.int8),
        "current_track_id": current,
        "candidate_track_ids": [[t] for t in track],
        "candidate_relationship": [[0.0] * n_betas] * len(frame),
        "user_taste": [[0.0] * latent_dim] * len(frame),
        "chosen_index": np.zeros(len(frame), np.int32),
        "chosen_track_id": track,
        "behaviour_logp": np.zeros(len(frame), np.float32),
        "listened": level >= 2,
        "listen_fraction": fraction,
        "liked": liked,
        "skip_level": level,
        "reward": compute_reward(fraction, liked, level, reward_config),
        "source": ["mssd"] * len(frame),
        "policy_version": ["mssd-logged"] * len(frame),
        "arm": [""] * len(frame),
        "request_id": [None] * len(frame),
    }
    arrays = [pa.array(rows[field.name], type=field.type) for field in DECISION_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=DECISION_SCHEMA)


def import_mssd(
    log_uri: str, mssd_uri: str | None = None, reward_config: RewardConfig | None = None
) -> dict[str, Any]:
    """Write the MSSD rows into the feedback log at ``log_uri``; returns the writer's counts
    plus the real skip shares."""
    from rl.feedback.log import FeedbackLogWriter

    frame = load_mssd(mssd_uri)
    with FeedbackLogWriter(log_uri) as writer:
        writer.append(mssd_to_table(frame, reward_config))
    counts = np.bincount(skip_levels(frame), minlength=4)
    return writer.counts | {
        "source_rows": len(frame),
        "sessions": int(frame["session_id"].nunique()),
        "skip_shares": {
            name: float(c / counts.sum()) for name, c in zip(SKIP_LEVEL_NAMES, counts, strict=True)
        },
        "report": writer.report(),
    }
