"""Feedback log -> RLlib's offline format, row per step, with Ray Data.

Where it sits: between the feedback log (rl/feedback/log.py) and offline PPO
(rl/training/, which builds multi-step SingleAgentEpisodes from these rows in
rl/training/episodes.py). One output row per logged decision:

    eps_id (str, = session_id), t (int32, step in the session), obs (list<float32>,
    ObservationLayout.size), actions (int64, chosen candidate index), rewards (float32),
    new_obs (list<float32>, the next step's obs; equal to obs at the last step),
    terminateds (bool, True at the session's last step), truncateds (bool, False),
    action_logp (float32, = behaviour_logp)

The observation is rebuilt from the log exactly as the simulator and the served Scorer
build it: current and candidate latents looked up by track id in the embedding, the
logged taste, context (hour, weekday), the logged relationship state and a candidate mask.
Rewards are recomputed from the logged response (listen_fraction, liked, skip_level) with
the given ``RewardConfig`` so another lambda needs no new log; with ``reward_config=None``
the logged ``reward`` is kept. When the decision rows carry an extra ``long_term_reward``
column (added by ``rl.longterm.return_reward`` from the days the user came back to the
song), it is added to that reward.

Rows are grouped by session with ``groupby("session_id").map_groups`` (a Ray Data
shuffle), so a session split across files or days is still one episode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rl.decision.observation import ObservationLayout
from rl.feedback.reward import RewardConfig, compute_reward

if TYPE_CHECKING:
    import ray.data

OFFLINE_SCHEMA = pa.schema(
    [
        ("eps_id", pa.string()),
        ("t", pa.int32()),
        ("obs", pa.list_(pa.float32())),
        ("actions", pa.int64()),
        ("rewards", pa.float32()),
        ("new_obs", pa.list_(pa.float32())),
        ("terminateds", pa.bool_()),
        ("truncateds", pa.bool_()),
        ("action_logp", pa.float32()),
    ]
)
UNKNOWN_TRACK_POLICIES = ("error", "zeros")
#: File beside the step rows holding the ObservationLayout they were built with. The leading
#: underscore makes parquet readers (pyarrow, Ray Data) skip it when reading the directory.
LAYOUT_FILE = "_layout.json"
#: Optional float column of decision rows added to the per-decision reward (the long-term
#: term of ``rl.longterm.return_reward``); absent in plain logs.
EXTRA_REWARD_COLUMN = "long_term_reward"


class UnknownTrackError(KeyError):
    """A logged track id has no latent in the embedding (e.g. MSSD rows)."""


class SessionStepBuilder:
    """Turns one session's decision rows (a pyarrow table) into offline step rows.

    A plain callable so the same code runs inside Ray Data's ``map_groups`` and in tests.
    """

    def __init__(
        self,
        latents: np.ndarray,  # (N, D)
        track_ids: Sequence[str],  # (N,)
        layout: ObservationLayout,
        reward_config: RewardConfig | None = None,
        unknown_tracks: str = "error",
        song_features: Any | None = None,
    ) -> None:
        """``song_features``: a ``SongFeatureTable`` (rl/longterm/song_table.py) that fills
        the layout's per-candidate song features (needed when ``song_feature_dim > 0``)."""
        if layout.song_feature_dim and song_features is None:
            raise ValueError("the layout has song features: pass song_features")
        self.song_features = song_features
        if unknown_tracks not in UNKNOWN_TRACK_POLICIES:
            raise ValueError(
                f"unknown_tracks must be one of {UNKNOWN_TRACK_POLICIES}, got {unknown_tracks!r}"
            )
        self.latents = np.asarray(latents, np.float32)
        if self.latents.shape[1] != layout.latent_dim:
            raise ValueError(
                f"latents are {self.latents.shape[1]}-d, the layout wants {layout.latent_dim}"
            )
        self.index = pd.Index(np.asarray(track_ids).astype(str))
        self.layout = layout
        self.reward_config = reward_config
        self.unknown_tracks = unknown_tracks

    def _lookup(self, ids: np.ndarray) -> np.ndarray:
        rows = self.index.get_indexer(ids)
        missing = rows < 0
        if missing.any():
            if self.unknown_tracks == "error":
                raise UnknownTrackError(
                    f"{int(missing.sum())} logged track id(s) have no latent, e.g. {ids[missing][:3].tolist()}; "
                    "pass unknown_tracks='zeros' to use zero latents"
                )
        latents = self.latents[np.maximum(rows, 0)]
        latents[missing] = 0.0
        return latents

    def observations(self, table: pa.Table) -> np.ndarray:
        """(n, layout.size) observations of decision rows."""
        layout, n = self.layout, table.num_rows
        k, d, r = layout.k, layout.latent_dim, layout.n_betas
        current = self._lookup(table["current_track_id"].to_numpy(zero_copy_only=False).astype(str))
        candidates = table["candidate_track_ids"].combine_chunks()
        lengths = candidates.value_lengths().to_numpy()
        if np.any(lengths > k):
            raise ValueError(f"rows with {lengths.max()} candidates exceed the layout's k={k}")
        flat_latents = self._lookup(candidates.values.to_numpy(zero_copy_only=False).astype(str))
        row = np.repeat(np.arange(n), lengths)
        slot = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        candidate_latents = np.zeros((n, k, d), np.float32)
        candidate_latents[row, slot] = flat_latents
        relationship_values = table["candidate_relationship"].combine_chunks().values.to_numpy()
        relationship = np.zeros((n, k, r), np.float32)
        relationship[row, slot] = relationship_values.reshape(-1, r)
        mask = np.zeros((n, k), np.float32)
        mask[row, slot] = 1.0
        taste = table["user_taste"].combine_chunks().values.to_numpy().reshape(n, -1)
        if taste.shape[1] != d:
            raise ValueError(f"logged user_taste is {taste.shape[1]}-d, the layout wants {d}")
        from rl.decision.observation import encode_context

        context = encode_context(table["hour"].to_numpy(), table["weekday"].to_numpy())
        features = None
        if layout.song_feature_dim:
            candidate_ids = np.full((n, k), "", dtype=object)
            candidate_ids[row, slot] = candidates.values.to_numpy(zero_copy_only=False)
            assert self.song_features is not None  # checked in __init__
            features = self.song_features.candidate_features_by_id(candidate_ids, taste)
            features = features * mask[..., None]
        return layout.build(
            current, taste, context, candidate_latents, relationship, mask, features
        )

    def __call__(self, session: pa.Table) -> pa.Table:
        """One or more whole sessions -> their step rows, ordered by (session, position)."""
        session = session.sort_by([("session_id", "ascending"), ("position", "ascending")])
        n = session.num_rows
        obs = self.observations(session)
        eps = session["session_id"].to_numpy(zero_copy_only=False).astype(str)
        last = np.ones(n, bool)
        last[:-1] = eps[1:] != eps[:-1]
        first = np.ones(n, bool)
        first[1:] = eps[1:] != eps[:-1]
        starts = np.flatnonzero(first)
        t = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
        new_obs = np.where(last[:, None], obs, np.roll(obs, -1, axis=0))
        if self.reward_config is None:
            rewards = session["reward"].to_numpy().astype(np.float32)
        else:
            rewards = compute_reward(
                session["listen_fraction"].to_numpy(),
                session["liked"].to_numpy(zero_copy_only=False),
                session["skip_level"].to_numpy(),
                self.reward_config,
            )
        if EXTRA_REWARD_COLUMN in session.column_names:
            rewards = rewards + session[EXTRA_REWARD_COLUMN].to_numpy().astype(np.float32)
        size = self.layout.size
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * size)
        return pa.Table.from_arrays(
            [
                pa.array(eps, pa.string()),
                pa.array(t.astype(np.int32)),
                pa.ListArray.from_arrays(offsets, pa.array(obs.reshape(-1), pa.float32())),
                pa.array(session["chosen_index"].to_numpy().astype(np.int64)),
                pa.array(rewards, pa.float32()),
                pa.ListArray.from_arrays(offsets, pa.array(new_obs.reshape(-1), pa.float32())),
                pa.array(last),
                pa.array(np.zeros(n, bool)),
                pa.array(session["behaviour_logp"].to_numpy().astype(np.float32)),
            ],
            schema=OFFLINE_SCHEMA,
        )


def decisions_to_offline_steps(
    dataset: ray.data.Dataset,
    embedding_latents: np.ndarray,
    track_ids: Sequence[str],
    layout: ObservationLayout,
    reward_config: RewardConfig | None = None,
    unknown_tracks: str = "error",
    num_partitions: int | None = None,
    song_features: Any | None = None,
) -> ray.data.Dataset:
    """Decision rows (``read_decisions``) -> RLlib row-per-step offline rows.

    ``num_partitions`` is the shuffle's partition count (Ray's default when None; a small
    number keeps small logs fast). ``song_features``: see ``SessionStepBuilder``."""
    builder = SessionStepBuilder(
        embedding_latents, track_ids, layout, reward_config, unknown_tracks, song_features
    )

    def session_steps(session: pa.Table) -> pa.Table:  # map_groups wants a named function
        return builder(session)

    grouped = dataset.groupby("session_id", num_partitions=num_partitions)
    return grouped.map_groups(session_steps, batch_format="pyarrow")


def write_offline_steps(
    log_uri: str,
    out_uri: str,
    embedding_latents: np.ndarray,
    track_ids: Sequence[str],
    layout: ObservationLayout,
    reward_config: RewardConfig | None = None,
    days: Sequence[int] | None = None,
    unknown_tracks: str = "error",
    num_partitions: int | None = None,
) -> int:
    """Read the log, convert, write parquet step rows under ``out_uri``; returns #rows.

    The observation layout is written beside the rows (``_layout.json``) so that training
    reads the data with the layout it was built with.
    """
    from rl.feedback.log import read_decisions

    steps = decisions_to_offline_steps(
        read_decisions(log_uri, days),
        embedding_latents,
        track_ids,
        layout,
        reward_config,
        unknown_tracks,
        num_partitions,
    )
    return write_steps(steps, out_uri, layout)


def write_steps(steps: ray.data.Dataset, out_uri: str, layout: ObservationLayout) -> int:
    """Write step rows as parquet under ``out_uri`` with ``_layout.json``; returns #rows."""
    from rl import storage

    filesystem, path = storage.resolve(out_uri)
    steps = steps.materialize()
    steps.write_parquet(path, filesystem=filesystem)
    storage.write_json(storage.join(out_uri, LAYOUT_FILE), layout.to_dict())
    return steps.count()
