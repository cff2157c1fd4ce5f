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
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rl import paths, storage
from rl.decision.observation import DEFAULT_BETAS
from rl.feedback.reward import SKIP_LEVEL_NAMES, RewardConfig, compute_reward
from rl.feedback.rows import decision_table

if TYPE_CHECKING:
    from rl.feedback.importers.parsing import ParsedChunk

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
        "candidate_track_ids": track.reshape(-1, 1),
        "candidate_relationship": np.zeros((len(frame), n_betas), np.float32),
        "user_taste": np.zeros((len(frame), latent_dim), np.float32),
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
    return decision_table(rows)


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


# -- streamed plays for `encore import-history --format mssd` ------------------------------
#: Rows per pandas chunk of a full MSSD training file (~3.5 M rows, 1.6 GB each).
MSSD_CHUNK_ROWS = 200_000


def first_mssd_day(path: str) -> int:
    """Days since the epoch of the earliest ``date`` in a file, read column-only, chunked."""
    first: pd.Timestamp | None = None
    for chunk in pd.read_csv(path, usecols=["date"], chunksize=MSSD_CHUNK_ROWS):
        dates = pd.to_datetime(chunk["date"], errors="coerce", format="ISO8601").dropna()
        if len(dates):
            low = dates.min()
            first = low if first is None or low < first else first
    if first is None:
        raise ValueError(f"{path}: no parseable 'date' in the MSSD file")
    return int((first - pd.Timestamp("1970-01-01")).days)


def read_mssd_plays(path: str, chunk_rows: int | None = None) -> Iterator[ParsedChunk]:
    """MSSD rows as parsed plays, a chunk at a time (never the whole file in memory).

    Each chunk ends at a session boundary: a session cut by the chunk's end is carried
    into the next chunk. Mapping: skip = skip_2 (played briefly; the flag of the real
    0.72 vs 0.30 figure), stream = skip level >= 2 (most of the track played), play time
    unknown (null); the track id ``t_...`` is MSSD's own (never in the Spotify catalog);
    the time is the date + hour_of_day, positions 210 s apart (MSSD gives the hour only).
    """
    name = os.path.basename(path)
    chunk_rows = chunk_rows or MSSD_CHUNK_ROWS
    carry: pd.DataFrame | None = None
    first_row = 0
    with open(path, "rb") as handle:
        reader = pd.read_csv(
            handle, chunksize=chunk_rows, dtype={"session_id": str, "track_id_clean": str}
        )
        for chunk in reader:
            missing = [c for c in REQUIRED_COLUMNS if c not in chunk.columns]
            if missing:
                raise ValueError(f"{path}: missing MSSD column(s) {missing}")
            chunk["_index"] = np.arange(first_row, first_row + len(chunk))
            first_row += len(chunk)
            frame = chunk if carry is None else pd.concat([carry, chunk], ignore_index=True)
            tail = frame["session_id"].to_numpy() == frame["session_id"].iloc[-1]
            frame, carry = frame.loc[~tail], frame.loc[tail]
            parsed = _mssd_parse(frame, name)
            parsed.bytes_read = handle.tell()  # read ahead by pandas' buffer: a progress figure
            yield parsed
    if carry is not None and len(carry):
        yield _mssd_parse(carry, name)


def _mssd_parse(frame: pd.DataFrame, name: str) -> ParsedChunk:
    from rl.feedback.importers.parsing import quarantine_records

    frame = frame.reset_index(drop=True)
    dates = pd.to_datetime(frame["date"], errors="coerce", format="ISO8601")
    hour = pd.to_numeric(frame["hour_of_day"], errors="coerce")
    position = pd.to_numeric(frame["session_position"], errors="coerce")
    flags = ("skip_1", "skip_2", "skip_3", "not_skipped")
    flag_ok = np.ones(len(frame), bool)
    for flag in flags:
        text = frame[flag].astype(str).str.strip().str.lower()
        flag_ok &= text.isin(("true", "false", "1", "0")).to_numpy()
    reasons = [
        (dates.isna().to_numpy(), "date missing or unparseable"),
        ((hour.isna() | (hour < 0) | (hour > 23)).to_numpy(), "hour_of_day not in 0..23"),
        ((position.isna() | (position < 1)).to_numpy(), "session_position missing or < 1"),
        (~flag_ok, "skip_1/skip_2/skip_3/not_skipped not boolean"),
        (frame["track_id_clean"].isna().to_numpy(), "track_id_clean missing"),
        (frame["session_id"].isna().to_numpy(), "session_id missing"),
    ]
    level = skip_levels(frame)
    midnight = (dates - pd.Timestamp("1970-01-01")).dt.total_seconds().fillna(-1).to_numpy(np.int64)
    safe_position = position.fillna(1).to_numpy(np.int64)
    timestamp = np.where(
        midnight >= 0,
        midnight + hour.fillna(0).to_numpy(np.int64) * 3_600 + (safe_position - 1) * 210,
        -1,
    )

    def optional(column: str):
        return frame[column].where(frame[column].notna(), None) if column in frame.columns else None

    parsed = pd.DataFrame(
        {
            "user_key": frame["session_id"],
            "timestamp": timestamp,
            "ms_played": np.nan,
            "skipped": level <= 1,
            "spotify_id": None,
            "artist": None,
            "title": None,
            "reason_start": optional("hist_user_behavior_reason_start"),
            "reason_end": optional("hist_user_behavior_reason_end"),
            "shuffle": _as_bool(frame["hist_user_behavior_is_shuffle"])
            if "hist_user_behavior_is_shuffle" in frame.columns
            else None,
            "kind": "track",
            "incognito": False,
            "own_id": frame["track_id_clean"],
            "session_key": frame["session_id"],
            "position": safe_position - 1,
            "_streamed": level >= 2,
        }
    )
    raw = (
        frame[[*REQUIRED_COLUMNS, "_index"]]
        if "_index" in frame.columns
        else frame[list(REQUIRED_COLUMNS)]
    )
    return quarantine_records(parsed, raw, reasons, name, [], len(frame))
