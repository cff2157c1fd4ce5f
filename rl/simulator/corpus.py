"""The simulator's corpus: songs with latents, durations, clickiness and stickiness.

RecSim NG's "corpus" entity. Latents come from the song embedding (the VAE), durations
from the real catalog's ``duration_ms``; clickiness (how likely a song is to be tried when
recommended) and stickiness (how likely a listener is to come back to it on later days)
are hidden per-song traits drawn with a weak, by default negative, correlation: the
paper's central observation is that the two are different things.

The kNN candidate table is computed here once (N x (k + margin) rows from ``KnnIndex``),
so each decision's retrieval in the simulator is a table lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rl.decision.policies import latent_scale_of
from rl.simulator.config import SimulatorConfig
from rl.songs.retrieval import KnnIndex

#: Fallback song length (seconds) where the catalog has none: the catalog's median is ~3.6 min.
DEFAULT_DURATION_S = 216.0


@dataclass(frozen=True)
class Corpus:
    """Row-aligned song arrays; row i is ``track_ids[i]``."""

    track_ids: np.ndarray  # (N,) str
    latents: np.ndarray  # (N, D) float32
    durations_s: np.ndarray  # (N,) float32 seconds
    popularity: np.ndarray  # (N,) float32, standardised (mean 0, std 1)
    clickiness: np.ndarray  # (N,) float32 listen-utility offset (logit)
    stickiness: np.ndarray  # (N,) float32 daily return logit
    neighbours: np.ndarray  # (N, k + margin) int32 rows, nearest first, -1 padding
    latent_scale: float  # sqrt of the latents' total variance

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def latent_dim(self) -> int:
        return self.latents.shape[1]


def neighbour_table(
    latents: np.ndarray, track_ids: Sequence[str] | np.ndarray, width: int
) -> np.ndarray:
    """(N, width) int32: each song's nearest other songs (exact kNN), -1 where too few."""
    rows, _ = KnnIndex(latents, list(track_ids)).neighbour_table(max(width, 1))
    if rows.shape[1] == 0:  # a one-song catalog: one column of "no candidate"
        return np.full((len(rows), 1), -1, np.int32)
    return rows


def build_corpus(
    latents: np.ndarray,
    track_ids: Sequence[str] | np.ndarray,
    k: int,
    config: SimulatorConfig,
    rng: np.random.Generator,
    durations_s: np.ndarray | None = None,
    popularity: np.ndarray | None = None,
) -> Corpus:
    """Draw the hidden song traits and precompute the candidate table.

    ``durations_s`` (N,) seconds and ``popularity`` (N,) (e.g. the catalog's
    ``track_popularity``) are optional; missing values fall back to the median length
    and to random popularity.
    """
    latents = np.ascontiguousarray(latents, np.float32)
    n_songs = len(latents)
    if durations_s is None:
        durations = np.full(n_songs, DEFAULT_DURATION_S, np.float32)
    else:
        durations = np.asarray(durations_s, np.float64)
        if durations.shape != (n_songs,):
            raise ValueError(f"durations_s must be ({n_songs},), got {durations.shape}")
        durations = np.where(
            np.isfinite(durations) & (durations > 0), durations, DEFAULT_DURATION_S
        )
        durations = durations.astype(np.float32)
    if popularity is None:
        popularity_z = rng.standard_normal(n_songs)
    else:
        raw = np.asarray(popularity, np.float64)
        raw = np.where(np.isfinite(raw), raw, np.nanmedian(raw))
        popularity_z = (raw - raw.mean()) / max(raw.std(), 1e-9)
    click_draw = rng.standard_normal(n_songs)
    rho = config.click_stick_correlation
    stick_draw = rho * click_draw + np.sqrt(1.0 - rho**2) * rng.standard_normal(n_songs)
    direction = rng.standard_normal(latents.shape[1])
    smooth = (latents - latents.mean(axis=0)) @ direction
    smooth = (smooth - smooth.mean()) / max(float(smooth.std()), 1e-9)
    clickiness = (
        config.clickiness_std * click_draw
        + config.clickiness_smooth_std * smooth
        + config.popularity_weight * popularity_z
    )
    stickiness = config.stickiness_mean + config.stickiness_std * stick_draw
    return Corpus(
        track_ids=np.asarray(track_ids).astype(str),
        latents=latents,
        durations_s=durations,
        popularity=popularity_z.astype(np.float32),
        clickiness=clickiness.astype(np.float32),
        stickiness=stickiness.astype(np.float32),
        neighbours=neighbour_table(latents, list(track_ids), k + config.neighbour_margin),
        latent_scale=latent_scale_of(latents),
    )
