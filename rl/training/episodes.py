"""Whole-session RLlib episodes from row-per-step offline data, and their pre-learner.

Where it sits: the log converter (rl/feedback/offline_steps.py) writes one row per decision in
RLlib's offline column format; RLlib turns such rows into one-step episodes, which would
make GAE over a session impossible. ``write_session_episodes`` groups the rows by
``eps_id``, orders them by ``t`` and writes one msgpack-encoded ``SingleAgentEpisode``
per session (column ``item``, RLlib's ``input_read_episodes=True`` format) with Ray Data.

``SessionPreLearner`` is the Ray Data map step that decodes those episodes and runs the
learner connector on *whole* sessions, in order. RLlib's default pre-learner instead puts
them in a replay buffer that samples one-step slices, losing the session structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import msgpack_numpy as mnp
import numpy as np
import pandas as pd
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.offline.offline_prelearner import OfflinePreLearner
from ray.rllib.utils import flatten_dict

from rl import storage
from rl.training.ppo_learner import SESSION_STEP

STEP_COLUMNS = (
    "eps_id",
    "t",
    "obs",
    "actions",
    "rewards",
    "new_obs",
    "terminateds",
    "truncateds",
    "action_logp",
)


def session_episode(steps: pd.DataFrame) -> SingleAgentEpisode:
    """One session's rows (any order) -> a done SingleAgentEpisode with extra outputs."""
    steps = steps.sort_values("t")
    eps_id = str(steps["eps_id"].iloc[0])
    t = steps["t"].to_numpy()
    # Consecutive steps; a session may start after 0 when fine-tuning reads only the
    # files logged since the parent version.
    if not np.array_equal(t, np.arange(t[0], t[0] + len(t))):
        raise ValueError(f"session {eps_id}: steps t must be consecutive, got {t.tolist()}")
    observations = [np.asarray(o, np.float32) for o in steps["obs"]]
    observations.append(np.asarray(steps["new_obs"].iloc[-1], np.float32))
    terminated = bool(steps["terminateds"].iloc[-1])
    truncated = bool(steps["truncateds"].iloc[-1]) or not terminated
    episode = SingleAgentEpisode(
        id_=eps_id,
        observations=observations,
        actions=steps["actions"].astype(np.int64).tolist(),
        rewards=steps["rewards"].astype(np.float32).tolist(),
        terminated=terminated,
        truncated=truncated and not terminated,
        extra_model_outputs={
            "action_logp": steps["action_logp"].astype(np.float32).tolist(),
            SESSION_STEP: t.astype(np.int32).tolist(),
        },
        len_lookback_buffer=0,
    )
    return episode.to_numpy()


def pack_episode(episode: SingleAgentEpisode) -> bytes:
    return msgpack.packb(episode.get_state(), default=mnp.encode)


def unpack_episode(item: bytes) -> SingleAgentEpisode:
    return SingleAgentEpisode.from_state(msgpack.unpackb(item, object_hook=mnp.decode))


def episodes_from_steps(steps: pd.DataFrame) -> list[SingleAgentEpisode]:
    """All sessions of a (small) row-per-step frame, in eps_id order (tests, benchmark)."""
    return [session_episode(group) for _, group in steps.groupby("eps_id", sort=True)]


def _pack_sessions(group: pd.DataFrame) -> pd.DataFrame:
    episode = session_episode(group)
    return pd.DataFrame(
        {"item": [pack_episode(episode)], "eps_id": [episode.id_], "num_steps": [len(episode)]}
    )


@dataclass(frozen=True)
class EpisodeDataset:
    """Where the episodes were written and how much data went in."""

    uri: str
    num_sessions: int
    num_steps: int


def write_session_episodes(steps: str | list[str], out_uri: str) -> EpisodeDataset:
    """Read row-per-step parquet (a directory URI or a list of file URIs) with Ray Data,
    write one episode per session to ``out_uri``.

    All are storage URIs (local path or s3://...). Needs a running Ray.
    """
    import ray.data

    uris = [steps] if isinstance(steps, str) else list(steps)
    if not uris:
        raise ValueError("no offline data files to read")
    in_fs = storage.resolve(uris[0])[0]
    in_paths = [storage.resolve(u)[1] for u in uris]
    out_fs, out_path = storage.resolve(out_uri)
    dataset = ray.data.read_parquet(in_paths, filesystem=in_fs, columns=list(STEP_COLUMNS))
    # Ray Data's default of 200 shuffle partitions costs minutes on a small log; aim for
    # ~50k decisions per partition instead (the row count comes from parquet footers).
    partitions = max(1, min(200, dataset.count() // 50_000 + 1))
    packed = dataset.groupby("eps_id", num_partitions=partitions).map_groups(
        _pack_sessions, batch_format="pandas"
    )
    packed = packed.materialize()
    packed.write_parquet(out_path, filesystem=out_fs)
    num_steps = int(packed.sum("num_steps") or 0)
    return EpisodeDataset(uri=out_uri, num_sessions=packed.count(), num_steps=num_steps)


class SessionPreLearner(OfflinePreLearner):
    """Runs the learner connector on whole decoded sessions, keeping their step order."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if not self.config.input_read_episodes:
            return super().__call__(batch)
        episodes: list[Any] = [unpack_episode(item) for item in batch["item"]]
        out = self._learner_connector(
            rl_module=self._module, batch={}, episodes=episodes, shared_data={}, metrics=None
        )
        return flatten_dict(out)
