"""Row-per-step offline data on storage: listing its files, its layout, reading it small.

The converter (rl/feedback/offline_steps.py) writes the data; training reads it through Ray Data
(episodes.py); the registry records which files and how many rows a run read (this
module), and fine-tuning trains on the files a parent version has not seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from rl import storage
from rl.decision.observation import ObservationLayout
from rl.feedback.offline_steps import LAYOUT_FILE  # written beside the data; else --k/--latent-dim


def parquet_files(uri: str) -> list[str]:
    """Full URIs of the parquet files under a directory URI (or the file itself)."""
    fs, path = storage.resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no offline data at {uri}")
    if info.type == pafs.FileType.File:
        return [uri]
    selector = pafs.FileSelector(path, recursive=True)
    found = [
        i.path
        for i in fs.get_file_info(selector)
        if i.type == pafs.FileType.File and i.path.endswith(".parquet")
    ]
    prefix = uri[: len(uri) - len(path)] if not storage.is_local(uri) else ""
    return sorted(prefix + p for p in found)


@dataclass(frozen=True)
class StepsData:
    """What a run read: its files, and row/session counts."""

    files: list[str]
    rows: int

    def to_dict(self) -> dict:
        return {"paths": self.files, "rows": self.rows}


def describe(files: list[str]) -> StepsData:
    """Row count of the given parquet files from their footers (no data read)."""
    if not files:
        return StepsData(files=[], rows=0)
    fs, _ = storage.resolve(files[0])
    dataset = pads.dataset([storage.resolve(f)[1] for f in files], filesystem=fs, format="parquet")
    return StepsData(files=files, rows=int(dataset.count_rows()))


def resolve_layout(uri: str, default: ObservationLayout) -> ObservationLayout:
    """The layout stored beside the data if there is one, else ``default``."""
    candidate = storage.join(uri, LAYOUT_FILE)
    if storage.exists(candidate):
        return ObservationLayout.from_dict(storage.read_json(candidate))
    return default


@dataclass(frozen=True)
class LoggedDecisions:
    """Arrays of logged steps for off-policy evaluation (small logs only)."""

    obs: np.ndarray  # (B, size)
    actions: np.ndarray  # (B,)
    behaviour_logp: np.ndarray  # (B,)
    rewards: np.ndarray  # (B,)


def read_logged_decisions(files: list[str], layout: ObservationLayout) -> LoggedDecisions:
    fs, _ = storage.resolve(files[0])
    table = pads.dataset(
        [storage.resolve(f)[1] for f in files], filesystem=fs, format="parquet"
    ).to_table(columns=["obs", "actions", "action_logp", "rewards"])
    obs = np.asarray(table.column("obs").combine_chunks().flatten(), np.float32)
    obs = obs.reshape(table.num_rows, -1)
    if obs.shape[1] != layout.size:
        raise ValueError(f"obs have {obs.shape[1]} features, the layout needs {layout.size}")
    return LoggedDecisions(
        obs=obs,
        actions=table.column("actions").to_numpy().astype(np.int64),
        behaviour_logp=table.column("action_logp").to_numpy().astype(np.float64),
        rewards=table.column("rewards").to_numpy().astype(np.float64),
    )
