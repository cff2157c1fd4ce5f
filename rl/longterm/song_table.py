"""What the logs reveal about each song: the per-song feature table the actor-critic reads.

Where it sits: fitted from a feedback log (written by the simulator or the service) with
Ray Data, saved into the registry version of the policy trained with it (so the table and
the weights are swapped together), and read per candidate wherever an observation is built
(the simulator, the offline-step converter, the served Scorer): the last
``song_feature_dim`` entries of each candidate in ``ObservationLayout``. The fitting is in
rl/longterm/song_table_fit.py; this module holds the table, its lookup and storage.

Why: within a kNN candidate set most of the variance of a listen is per song -- how often
a song is tried once shown, how often people come back to it -- and the audio latents do
not predict it; only the logs do. Per song i the table holds

* ``clickiness_logit``: log-odds of the shrunken listen rate on logged impressions,
  (listens_i + κ p̄) / (impressions_i + κ), minus the log-odds of p̄ (0 = an average song);
* ``stickiness`` S_i: the paper's unpersonalised shrunken mean of organic return days in
  the ``horizon_days`` - 1 days after a discovery, (Σ y + κ S̄) / (n_i + κ);
* ``stickiness_vectors`` v_i: the paper's eq. 15 on u = [1, taste at discovery],
  v_i = (UᵀU + λI)⁻¹(Uᵀy + λ v̄), v̄ the pooled fit, so ⟨u, v_i⟩ is the return days
  expected of the user at hand;
* ``popularity``: log(1 + streams from recommendations) in the log.

Songs the table does not know (new releases, songs never shown) get the priors: logit 0,
S̄, v̄, popularity 0 -- the cold start. Observations carry
``candidate_features`` = [clickiness_logit, S_i, ⟨[1, u], v_i⟩ clipped to the window,
popularity] (``FEATURE_NAMES``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rl import storage
from rl.config_checks import require_choice, require_positive
from rl.longterm.stickiness import with_intercept

if TYPE_CHECKING:  # the fitting lives in song_table_fit.py, which imports this module
    from rl.longterm.song_table_fit import fit_song_table, fit_song_table_arrays  # noqa: F401

_FITTING = ("fit_song_table", "fit_song_table_arrays")

FEATURE_NAMES: tuple[str, ...] = (
    "clickiness_logit",
    "stickiness",
    "personal_return_days",
    "popularity",
)
"""The per-candidate features, in observation order."""
TABLE_FILE = "song_table.parquet"
META_FILE = "song_table.json"


@dataclass(frozen=True)
class SongTableConfig:
    """How the table is fitted."""

    horizon_days: int | None = None
    """Return window of a discovery in days (the discovery day + horizon - 1 later days).
    None: min(60, half the log's days), so a short log still has discoveries whose whole
    window it saw. >= 2."""
    clickiness_shrinkage: float = 5.0
    """κ of the listen rate: pseudo-impressions at the overall rate. > 0. About
    p̄(1 − p̄) / Var(p_i): with listen rates spread by ~0.2 between songs, 5."""
    stickiness_l2: float = 20.0
    """λ of the stickiness vectors' pull toward the pooled vector, in discoveries. > 0."""
    mean_shrinkage: float = 20.0
    """κ of the unpersonalised S_i: pseudo-discoveries at the overall mean. > 0."""
    return_source: str = "organic"
    """Return days counted: "organic" (unrecommended listens; default, see
    ``stickiness.discovery_dataset``) or "any"."""

    def __post_init__(self) -> None:
        if self.horizon_days is not None and self.horizon_days < 2:
            raise ValueError(f"horizon_days must be >= 2 or None, got {self.horizon_days}")
        require_positive(self, "clickiness_shrinkage", "stickiness_l2", "mean_shrinkage")
        require_choice(self, "return_source", ("any", "organic"))


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


class SongFeatureTable:
    """Per-song features with priors for unknown songs (see the module docstring)."""

    def __init__(
        self,
        track_ids: np.ndarray,  # (N,)
        impressions: np.ndarray,  # (N,)
        listens: np.ndarray,  # (N,)
        clickiness_logit: np.ndarray,  # (N,)
        stickiness: np.ndarray,  # (N,)
        stickiness_vectors: np.ndarray,  # (N, 1 + D)
        discoveries: np.ndarray,  # (N,)
        prior_stickiness: float,
        prior_vector: np.ndarray,  # (1 + D,)
        horizon_days: int,
        latents: np.ndarray | None = None,  # (N, L) the songs' embedding latents, NaN if unknown
    ) -> None:
        self.track_ids = np.asarray(track_ids).astype(str)
        self.impressions = np.asarray(impressions, np.int64)
        self.listens = np.asarray(listens, np.int64)
        self.clickiness_logit = np.asarray(clickiness_logit, np.float32)
        self.stickiness = np.asarray(stickiness, np.float32)
        self.stickiness_vectors = np.asarray(stickiness_vectors, np.float32)
        self.discoveries = np.asarray(discoveries, np.int64)
        self.prior_stickiness = float(prior_stickiness)
        self.prior_vector = np.asarray(prior_vector, np.float32)
        self.horizon_days = int(horizon_days)
        self.popularity = np.log1p(self.listens).astype(np.float32)
        self.latents = None if latents is None else np.asarray(latents, np.float32)
        self._index = pd.Index(self.track_ids)
        n = len(self.track_ids)
        for name in ("impressions", "listens", "clickiness_logit", "stickiness", "discoveries"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows for {n} songs")
        if self.stickiness_vectors.shape != (n, len(self.prior_vector)):
            raise ValueError(
                f"stickiness_vectors must be ({n}, {len(self.prior_vector)}), "
                f"got {self.stickiness_vectors.shape}"
            )

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def taste_dim(self) -> int:
        return len(self.prior_vector) - 1

    def rows_of(self, track_ids: np.ndarray) -> np.ndarray:
        """Any-shaped track ids -> table rows, -1 for songs the table does not know."""
        ids = np.asarray(track_ids).astype(str)
        return self._index.get_indexer(ids.ravel()).reshape(ids.shape)

    def aligned(self, track_ids: np.ndarray) -> SongFeatureTable:
        """The table re-ordered to ``track_ids`` (e.g. a catalog's rows); songs it does not
        know get the priors, so a row index into ``track_ids`` is a row index here."""
        rows = self.rows_of(track_ids)
        known = rows >= 0
        safe = np.maximum(rows, 0)

        def take(values: np.ndarray, prior: Any) -> np.ndarray:
            picked = values[safe].copy()
            picked[~known] = prior
            return picked

        return SongFeatureTable(
            track_ids=np.asarray(track_ids).astype(str),
            impressions=take(self.impressions, 0),
            listens=take(self.listens, 0),
            clickiness_logit=take(self.clickiness_logit, 0.0),
            stickiness=take(self.stickiness, self.prior_stickiness),
            stickiness_vectors=take(self.stickiness_vectors, self.prior_vector),
            discoveries=take(self.discoveries, 0),
            prior_stickiness=self.prior_stickiness,
            prior_vector=self.prior_vector,
            horizon_days=self.horizon_days,
            latents=None if self.latents is None else take(self.latents, np.nan),
        )

    def candidate_features(
        self,
        rows: np.ndarray,  # (B, K) table rows, -1 = unknown song (gets the priors)
        taste: np.ndarray,  # (B, D) the user's taste
    ) -> np.ndarray:
        """(B, K, len(FEATURE_NAMES)) float32 features of each candidate for its user."""
        rows = np.asarray(rows, np.int64)
        known = rows >= 0
        safe = np.maximum(rows, 0)
        click = np.where(known, self.clickiness_logit[safe], 0.0)
        sticky = np.where(known, self.stickiness[safe], self.prior_stickiness)
        vectors = np.where(known[..., None], self.stickiness_vectors[safe], self.prior_vector)
        user = with_intercept(np.asarray(taste, np.float64)[:, : self.taste_dim])  # (B, 1 + D)
        personal = np.clip((vectors * user[:, None, :]).sum(-1), 0.0, self.horizon_days - 1)
        popularity = np.where(known, self.popularity[safe], 0.0)
        return np.stack([click, sticky, personal, popularity], axis=-1).astype(np.float32)

    def candidate_features_by_id(self, track_ids: np.ndarray, taste: np.ndarray) -> np.ndarray:
        """(B, K) track ids ("" for padding) -> (B, K, F) features (the served lookup)."""
        return self.candidate_features(self.rows_of(track_ids), taste)

    # -- persistence ---------------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        columns = {
            "track_id": pa.array(self.track_ids, pa.string()),
            "impressions": pa.array(self.impressions),
            "listens": pa.array(self.listens),
            "clickiness_logit": pa.array(self.clickiness_logit),
            "stickiness": pa.array(self.stickiness),
            "discoveries": pa.array(self.discoveries),
            "stickiness_vector": pa.FixedSizeListArray.from_arrays(
                pa.array(self.stickiness_vectors.reshape(-1)), len(self.prior_vector)
            ),
        }
        if self.latents is not None:
            columns["latent"] = pa.FixedSizeListArray.from_arrays(
                pa.array(self.latents.reshape(-1)), self.latents.shape[1]
            )
        return pa.table(columns)

    def save(self, directory_uri: str) -> None:
        """Write ``song_table.parquet`` and ``song_table.json`` (priors) under the folder."""
        import pyarrow.parquet as pq

        filesystem, path = storage.resolve(storage.join(directory_uri, TABLE_FILE))
        filesystem.create_dir(storage.resolve(directory_uri)[1], recursive=True)
        with filesystem.open_output_stream(path) as stream:
            pq.write_table(self.to_arrow(), stream)
        storage.write_json(
            storage.join(directory_uri, META_FILE),
            {
                "feature_names": list(FEATURE_NAMES),
                "prior_stickiness": self.prior_stickiness,
                "prior_vector": self.prior_vector.tolist(),
                "horizon_days": self.horizon_days,
                "songs": len(self),
            },
        )

    @classmethod
    def load(cls, directory_uri: str) -> SongFeatureTable:
        import pyarrow.parquet as pq

        meta = storage.read_json(storage.join(directory_uri, META_FILE))
        if tuple(meta["feature_names"]) != FEATURE_NAMES:
            raise ValueError(
                f"song table at {directory_uri} has features {meta['feature_names']}, "
                f"this code reads {list(FEATURE_NAMES)}"
            )
        filesystem, path = storage.resolve(storage.join(directory_uri, TABLE_FILE))
        with filesystem.open_input_file(path) as stream:
            table = pq.read_table(stream)
        width = len(meta["prior_vector"])
        vectors = table["stickiness_vector"].combine_chunks().flatten().to_numpy()
        latents = None
        if "latent" in table.column_names:
            column = table["latent"].combine_chunks()
            latents = column.flatten().to_numpy().reshape(len(column), -1)
        return cls(
            track_ids=table["track_id"].to_numpy(zero_copy_only=False),
            impressions=table["impressions"].to_numpy(),
            listens=table["listens"].to_numpy(),
            clickiness_logit=table["clickiness_logit"].to_numpy(),
            stickiness=table["stickiness"].to_numpy(),
            stickiness_vectors=vectors.reshape(-1, width),
            discoveries=table["discoveries"].to_numpy(),
            prior_stickiness=float(meta["prior_stickiness"]),
            prior_vector=np.asarray(meta["prior_vector"], np.float32),
            horizon_days=int(meta["horizon_days"]),
            latents=latents,
        )

    @staticmethod
    def exists(directory_uri: str) -> bool:
        return storage.exists(storage.join(directory_uri, META_FILE))


class ObservationSongFeatures:
    """Adds a table's song features to observations built without them (the served path).

    The Scorer receives observations whose candidates are known by their latents (the
    layout without song features); this finds each candidate's table row by its exact
    float32 latent (a dict lookup, microseconds per request) and appends the features for
    the user's taste. A latent the table does not hold -- a song released after the table
    was fitted, or re-encoded -- gets the priors (cold start), so it can still be ranked
    and picked. Songs with identical audio features share a latent; they get the features
    of the one the table lists first (2.6% of the real catalog's songs have a twin).
    """

    def __init__(self, table: SongFeatureTable, layout: Any) -> None:
        if table.latents is None:
            raise ValueError("the song table holds no latents: fit it with fit_song_table")
        if layout.song_feature_dim != len(FEATURE_NAMES):
            raise ValueError(
                f"layout.song_feature_dim is {layout.song_feature_dim}, the table gives "
                f"{len(FEATURE_NAMES)}"
            )
        self.table = table
        self.layout = layout
        self.base_size = layout.without_song_features().size
        self._row_of: dict[bytes, int] = {}
        finite = np.isfinite(table.latents).all(axis=1)
        for row in np.flatnonzero(finite)[::-1]:  # the first listed wins a shared latent
            self._row_of[np.ascontiguousarray(table.latents[row]).tobytes()] = int(row)

    def rows(self, candidate_latents: np.ndarray) -> np.ndarray:
        """(B, K, D) latents -> (B, K) table rows, -1 for latents the table does not hold."""
        flat = np.ascontiguousarray(candidate_latents, np.float32).reshape(
            -1, candidate_latents.shape[-1]
        )
        get = self._row_of.get
        rows = np.fromiter((get(v.tobytes(), -1) for v in flat), np.int64, len(flat))
        return rows.reshape(candidate_latents.shape[:-1])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """(B, base size) -> (B, layout.size); observations that have them pass through."""
        obs = np.asarray(obs, np.float32)
        if obs.shape[1] == self.layout.size:
            return obs
        if obs.shape[1] != self.base_size:
            raise ValueError(f"obs must be (B, {self.base_size}), got {obs.shape}")
        parts = self.layout.without_song_features().split(obs)
        mask = parts["candidate_mask"] > 0.5
        rows = self.rows(parts["candidate_latents"])
        features = self.table.candidate_features(rows, parts["user_taste"]) * mask[..., None]
        return self.layout.with_song_features(obs, features)


def table_summary(table: SongFeatureTable) -> dict[str, Any]:
    """A few numbers worth printing and keeping in a manifest."""
    shown = table.impressions > 0
    return {
        "songs": len(table),
        "songs_shown": int(shown.sum()),
        "songs_with_discoveries": int((table.discoveries > 0).sum()),
        "discoveries": int(table.discoveries.sum()),
        "horizon_days": table.horizon_days,
        "prior_stickiness": round(table.prior_stickiness, 4),
        "clickiness_logit_sd": float(np.std(table.clickiness_logit[shown])) if shown.any() else 0.0,
    }


def config_dict(config: SongTableConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(config)))


def __getattr__(name: str) -> Any:
    """``fit_song_table`` and ``fit_song_table_arrays`` stay importable from here; loaded
    on first use because song_table_fit.py imports this module."""
    if name in _FITTING:
        from rl.longterm import song_table_fit

        return getattr(song_table_fit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
