"""A feedback log as offline training steps whose observations carry the song features.

Where it sits: between the song table (rl/longterm/song_table.py) and training. ``encore
compare-policies`` (rl/experiments/compare_policies.py, which re-exports these names),
the closed loop and tuning convert their logs with ``write_feature_steps``; with a return
weight the reward also gets the paper's long-term term, w x listened x <[1, u], v_i>.
"""

from __future__ import annotations

import numpy as np

from rl.decision.observation import ObservationLayout
from rl.feedback.offline_steps_files import parquet_files
from rl.longterm.song_table import SongFeatureTable


def _return_days_column(table: SongFeatureTable, weight: float):
    """Ray Data batch function: adds ``long_term_reward`` = w x listened x <[1, u], v_i>."""
    import pyarrow as pa

    from rl.feedback.offline_steps import EXTRA_REWARD_COLUMN

    def add(batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        taste = batch["user_taste"].combine_chunks().values.to_numpy().reshape(n, -1)
        chosen = batch["chosen_track_id"].to_numpy(zero_copy_only=False)[:, None]
        expected = table.candidate_features_by_id(chosen, taste)[:, 0, 2]
        listened = batch["listened"].to_numpy(zero_copy_only=False).astype(np.float32)
        return batch.append_column(
            EXTRA_REWARD_COLUMN, pa.array((weight * listened * expected).astype(np.float32))
        )

    return add


def write_feature_steps(
    log_uri: str,
    steps_uri: str,
    embedding,
    layout: ObservationLayout,
    table: SongFeatureTable | None,
    return_weight: float | None = None,
    days: list[int] | None = None,
) -> list[str]:
    """The log (optionally some days) as offline steps whose observations carry the song
    features (``table``; None for a layout without them); with ``return_weight`` the reward
    gets the paper's long-term term (``_return_days_column``)."""
    from rl.feedback.log import read_decisions
    from rl.feedback.offline_steps import decisions_to_offline_steps, write_steps

    decisions = read_decisions(log_uri, days)
    if return_weight is not None:
        if table is None:
            raise ValueError("the return-days reward needs the song table")
        decisions = decisions.map_batches(
            _return_days_column(table, return_weight), batch_format="pyarrow", batch_size=None
        )
    steps = decisions_to_offline_steps(
        decisions,
        embedding.latents,
        [str(t) for t in embedding.track_ids],
        layout,
        num_partitions=4,
        song_features=table,
    )
    write_steps(steps, steps_uri, layout)
    return parquet_files(steps_uri)
