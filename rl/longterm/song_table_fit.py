"""Fitting the per-song feature table from a feedback log (rl/longterm/song_table.py).

Where it sits: the fitting half of the song table. ``fit_song_table`` aggregates a log's
impressions and listen days (Ray Data, or in-process for small logs) and hands them to
``fit_song_table_arrays``, the numpy core that computes the shrunken estimates the table's
docstring defines. Lookup, saving and the served path stay in song_table.py, which also
re-exports these names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rl.longterm.song_table import SongFeatureTable, SongTableConfig, _logit
from rl.longterm.stickiness import shrunken_ridge, with_intercept


def fit_song_table_arrays(
    impression_track_ids: np.ndarray,  # (M,) songs with impressions
    impressions: np.ndarray,  # (M,)
    listens: np.ndarray,  # (M,)
    discovery_track_ids: np.ndarray,  # (n,) one per discovery
    discovery_taste: np.ndarray,  # (n, D) taste at discovery
    discovery_return_days: np.ndarray,  # (n,)
    horizon_days: int,
    config: SongTableConfig,
) -> SongFeatureTable:
    """The numerical core: aggregated impressions + discoveries -> the table (no Ray)."""
    impression_ids = np.asarray(impression_track_ids).astype(str)
    discovery_ids = np.asarray(discovery_track_ids).astype(str)
    track_ids = np.union1d(impression_ids, discovery_ids)
    index = pd.Index(track_ids)
    n = len(track_ids)
    shown = np.zeros(n, np.int64)
    hits = np.zeros(n, np.int64)
    rows = index.get_indexer(impression_ids)
    np.add.at(shown, rows, np.asarray(impressions, np.int64))
    np.add.at(hits, rows, np.asarray(listens, np.int64))
    overall = hits.sum() / max(shown.sum(), 1) if shown.sum() else 0.5
    kappa = config.clickiness_shrinkage
    rate = (hits + kappa * overall) / (shown + kappa)
    clickiness_logit = _logit(rate) - _logit(overall)

    items = index.get_indexer(discovery_ids)
    y = np.asarray(discovery_return_days, np.float64)
    taste = np.asarray(discovery_taste, np.float64)
    dim = taste.shape[1] if taste.ndim == 2 and taste.shape[1] else 0
    features = with_intercept(taste.reshape(len(y), dim))
    if len(y):
        pooled = shrunken_ridge(
            features, y, np.zeros(len(y), np.int64), 1, 1e-3, np.zeros(features.shape[1])
        )[0]
        pooled_mean = float(y.mean())
    else:  # no discovery with a whole window in the log: nothing is known of returns
        pooled, pooled_mean = np.zeros(features.shape[1]), 0.0
    vectors = shrunken_ridge(features, y, items, n, config.stickiness_l2, pooled)
    counts = np.bincount(items, minlength=n)
    sums = np.bincount(items, weights=y, minlength=n)
    stickiness = (sums + config.mean_shrinkage * pooled_mean) / (counts + config.mean_shrinkage)
    return SongFeatureTable(
        track_ids=track_ids,
        impressions=shown,
        listens=hits,
        clickiness_logit=clickiness_logit,
        stickiness=stickiness,
        stickiness_vectors=vectors,
        discoveries=counts,
        prior_stickiness=pooled_mean,
        prior_vector=pooled,
        horizon_days=horizon_days,
    )


def _impressions_with_ray_data(log_uri: str, num_partitions: int = 8) -> pd.DataFrame:
    """Per chosen song: impressions and listens, aggregated by Ray Data."""
    from ray.data.aggregate import Count, Sum

    from rl.feedback.log import read_decisions

    dataset = read_decisions(log_uri).select_columns(["chosen_track_id", "listened"])
    dataset = dataset.map_batches(
        lambda b: {"chosen_track_id": b["chosen_track_id"], "listened": b["listened"].astype(int)},
        batch_format="numpy",
    )
    # A few shuffle partitions: per-song counts are small, Ray's default 200 costs ~1 min.
    grouped = dataset.groupby("chosen_track_id", num_partitions=num_partitions).aggregate(
        Count(alias_name="impressions"), Sum("listened", alias_name="listens")
    )
    return grouped.to_pandas()


def _impressions_in_process(log_uri: str) -> pd.DataFrame:
    from rl.feedback.log import read_decisions_table

    frame = (
        read_decisions_table(log_uri, validate=False)
        .select(["chosen_track_id", "listened"])
        .to_pandas()
    )
    grouped = frame.groupby("chosen_track_id")["listened"].agg(["size", "sum"])
    return pd.DataFrame(
        {
            "chosen_track_id": grouped.index.to_numpy(),
            "impressions": grouped["size"].to_numpy(),
            "listens": grouped["sum"].to_numpy(),
        }
    )


def fit_song_table(
    log_uri: str,
    item_latents: np.ndarray,  # (N, D) catalog latents (the taste fallback's vocabulary)
    track_ids: np.ndarray,  # (N,) catalog track ids
    config: SongTableConfig | None = None,
    engine: str = "ray",
) -> SongFeatureTable:
    """Fit the table from a feedback log: impressions and listen days with Ray Data
    (``engine="ray"``; ``"pyarrow"`` in-process for small logs), then the numpy core."""
    from rl.feedback.log import read_decisions_table
    from rl.longterm.listen_days import listen_days_from_log
    from rl.longterm.stickiness import discovery_dataset
    from rl.longterm.taste import LoggedTaste, TasteModel

    config = config or SongTableConfig()
    if engine not in ("ray", "pyarrow"):
        raise ValueError(f"engine must be 'ray' or 'pyarrow', got {engine!r}")
    counts = (
        _impressions_with_ray_data(log_uri) if engine == "ray" else _impressions_in_process(log_uri)
    )
    track_ids = np.asarray(track_ids, dtype=object)
    listen_days = listen_days_from_log(log_uri, track_ids=track_ids, engine=engine)
    log_days = listen_days.end_day
    horizon = config.horizon_days or max(2, min(60, log_days // 2))
    logged = (
        read_decisions_table(log_uri, validate=False)
        .select(["user_id", "day", "user_taste"])
        .to_pandas()
    )
    history = TasteModel().fit(listen_days, item_latents)
    taste = LoggedTaste(history).fit_decisions(listen_days.user_ids, logged)
    discoveries = discovery_dataset(
        listen_days, taste, horizon, end_day=log_days, return_source=config.return_source
    )
    table = fit_song_table_arrays(
        counts["chosen_track_id"].to_numpy(),
        counts["impressions"].to_numpy(),
        counts["listens"].to_numpy(),
        np.asarray(listen_days.track_ids)[discoveries.item],
        discoveries.taste,
        discoveries.return_days,
        horizon,
        config,
    )
    # The songs' latents, so a server that sees candidates only by latent can find them.
    rows = pd.Index(np.asarray(track_ids).astype(str)).get_indexer(table.track_ids)
    latents = np.asarray(item_latents, np.float32)[np.maximum(rows, 0)]
    latents[rows < 0] = np.nan
    table.latents = latents
    return table
