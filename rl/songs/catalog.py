"""The song catalog: real Spotify tracks with their 11 audio features.

Loads ``spotify_songs.parquet`` (any pyarrow filesystem URI), deduplicates on
``track_id`` (a track appears once per playlist it was found in; the first row's genre
labels are kept), validates the 11 model features and keeps name/artist/genre as
metadata. Bad input fails loudly, naming the column and the number of offending rows:
nothing is dropped silently.

``FeatureScaler`` maps the features to [0, 1] with a curve fitted on the catalog (its
empirical CDF by default, or min/max); it is saved inside the embedding checkpoint so
serving normalises exactly as training did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from rl import paths, storage

#: The 11 Spotify audio features the VAE encodes, in model order.
FEATURE_COLUMNS: tuple[str, ...] = (
    "danceability",
    "energy",
    "key",
    "loudness",
    "mode",
    "speechiness",
    "acousticness",
    "instrumentalness",
    "liveness",
    "valence",
    "tempo",
)
#: Metadata kept beside the features (for display and evaluation, not for the model).
METADATA_COLUMNS: tuple[str, ...] = (
    "track_name",
    "track_artist",
    "playlist_genre",
    "playlist_subgenre",
    "track_popularity",
    "duration_ms",
)


class CatalogError(ValueError):
    """The catalog file is missing columns or holds values the model cannot use."""


@dataclass(frozen=True)
class Catalog:
    """Deduplicated tracks: ids, raw features and metadata, row-aligned."""

    track_ids: np.ndarray  # (N,) str
    features: np.ndarray  # (N, 11) float64, raw (un-normalised) values
    metadata: pd.DataFrame  # (N, len(METADATA_COLUMNS)), index = track_id

    def __len__(self) -> int:
        return len(self.track_ids)

    def index_of(self) -> dict[str, int]:
        """Map track_id -> row."""
        return {track_id: row for row, track_id in enumerate(self.track_ids)}

    def genres(self) -> np.ndarray:
        return self.metadata["playlist_genre"].to_numpy()

    def describe(self, track_id: str) -> str:
        row = self.metadata.loc[track_id]
        name = row["track_name"] if isinstance(row["track_name"], str) else "<untitled>"
        artist = row["track_artist"] if isinstance(row["track_artist"], str) else "<unknown>"
        return f"{name} — {artist} [{row['playlist_genre']}/{row['playlist_subgenre']}]"


def validate_frame(frame: pd.DataFrame, source: str = "catalog") -> None:
    """Raise ``CatalogError`` naming each problem column; return silently when usable."""
    required = ("track_id", *FEATURE_COLUMNS)
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise CatalogError(f"{source}: missing required column(s) {missing}")
    problems = []
    null_ids = int(frame["track_id"].isna().sum())
    if null_ids:
        problems.append(f"column 'track_id' has {null_ids} missing value(s)")
    for column in FEATURE_COLUMNS:
        values = frame[column]
        numeric = pd.to_numeric(values, errors="coerce")
        non_numeric = int((numeric.isna() & values.notna()).sum())
        if non_numeric:
            problems.append(f"column '{column}' has {non_numeric} non-numeric value(s)")
        missing_values = int(values.isna().sum())
        if missing_values:
            problems.append(f"column '{column}' has {missing_values} NaN/missing value(s)")
        infinite = int(np.isinf(numeric.to_numpy(dtype=float, na_value=0.0)).sum())
        if infinite:
            problems.append(f"column '{column}' has {infinite} infinite value(s)")
    if problems:
        raise CatalogError(f"{source}: " + "; ".join(problems))


def catalog_from_frame(frame: pd.DataFrame, source: str = "catalog") -> Catalog:
    """Validate, deduplicate on track_id and split into features and metadata."""
    validate_frame(frame, source)
    deduplicated = frame.drop_duplicates(subset="track_id", keep="first").reset_index(drop=True)
    features = deduplicated[list(FEATURE_COLUMNS)].apply(pd.to_numeric).to_numpy(np.float64)
    metadata = pd.DataFrame(index=deduplicated["track_id"].astype(str).to_numpy())
    metadata.index.name = "track_id"
    for column in METADATA_COLUMNS:
        metadata[column] = deduplicated[column].to_numpy() if column in deduplicated else None
    return Catalog(
        track_ids=deduplicated["track_id"].astype(str).to_numpy(),
        features=features,
        metadata=metadata,
    )


def load_catalog(uri: str | None = None) -> Catalog:
    """Load and validate the catalog parquet at ``uri`` (default: the shared real catalog)."""
    uri = uri or paths.default_catalog_uri()
    filesystem, path = storage.resolve(uri)
    try:
        table = pq.read_table(path, filesystem=filesystem)
    except FileNotFoundError as exc:
        raise CatalogError(f"catalog not found at {uri}") from exc
    return catalog_from_frame(table.to_pandas(), source=uri)


@dataclass(frozen=True)
class FeatureScaler:
    """Maps each of the 11 features to [0, 1] by a monotone curve fitted on the catalog.

    The curve is piecewise linear through ``knots`` (per feature: input values ``inputs``
    and their levels in [0, 1]). Two knots (min -> 0, max -> 1) is plain min-max scaling;
    many knots at the catalog's quantiles is the empirical CDF ("quantile" scaling), which
    spreads skewed features such as speechiness or instrumentalness, most of whose mass sits
    near 0, over the whole unit interval so that differences between songs stay visible.
    Inputs outside the fitted range are clipped to 0 or 1.
    """

    inputs: tuple[np.ndarray, ...]  # per feature: (Q_j,) strictly increasing knots
    levels: tuple[np.ndarray, ...]  # per feature: (Q_j,) non-decreasing values in [0, 1]
    method: str = "quantile"

    @classmethod
    def fit(
        cls, features: np.ndarray, method: str = "quantile", n_quantiles: int = 1001
    ) -> FeatureScaler:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(FEATURE_COLUMNS):
            raise ValueError(f"features must be (N, {len(FEATURE_COLUMNS)}), got {features.shape}")
        if len(features) == 0:
            raise ValueError("cannot fit a scaler on zero rows")
        if method == "minmax":
            grid = np.array([0.0, 1.0])
        elif method == "quantile":
            if n_quantiles < 2:
                raise ValueError(f"n_quantiles must be >= 2, got {n_quantiles}")
            grid = np.linspace(0.0, 1.0, n_quantiles)
        else:
            raise ValueError(f"method must be 'quantile' or 'minmax', got {method!r}")
        inputs, levels = [], []
        for column in features.T:
            knots = np.quantile(column, grid)
            # Ties (discrete features such as key and mode) share one knot at their mean level.
            unique, inverse = np.unique(knots, return_inverse=True)
            mean_level = np.bincount(inverse, weights=grid) / np.bincount(inverse)
            if len(unique) == 1:  # constant column: everything maps to 0.5
                mean_level = np.array([0.5])
            elif method == "minmax":
                mean_level = np.array([0.0, 1.0])
            inputs.append(unique)
            levels.append(mean_level)
        return cls(inputs=tuple(inputs), levels=tuple(levels), method=method)

    def transform(self, features: np.ndarray) -> np.ndarray:
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if features.shape[1] != len(self.inputs):
            raise ValueError(f"features must be (B, {len(self.inputs)}), got {features.shape}")
        columns = [
            np.interp(features[:, j], self.inputs[j], self.levels[j])
            for j in range(len(self.inputs))
        ]
        return np.stack(columns, axis=1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "inputs": [knots.tolist() for knots in self.inputs],
            "levels": [level.tolist() for level in self.levels],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> FeatureScaler:
        return cls(
            inputs=tuple(np.asarray(knots, np.float64) for knots in state["inputs"]),
            levels=tuple(np.asarray(level, np.float64) for level in state["levels"]),
            method=state.get("method", "quantile"),
        )


def genre_coherence(neighbour_rows: np.ndarray, genres: np.ndarray) -> tuple[float, float]:
    """Share of neighbours sharing the query track's genre, and the chance level.

    ``neighbour_rows`` is (N, k): for each track (row i of the catalog), the rows of its
    k nearest other tracks. Chance is sum_g p_g^2, the agreement of two random tracks.
    """
    same = genres[neighbour_rows] == genres[:, None]
    _, counts = np.unique(genres, return_counts=True)
    shares = counts / counts.sum()
    return float(same.mean()), float(np.sum(shares**2))
