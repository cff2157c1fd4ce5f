"""What the request pipeline knows about catalog songs: ids, latents, names, durations.

Where it sits: built once per ingress replica (services/assembly.py) from the song
embedding and the catalog's metadata; the pipeline (services/core/request_pipeline.py) looks
up a catalog track's latent and its display fields here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CatalogTable:
    """What the pipeline needs to know about catalog songs (row-aligned)."""

    track_ids: np.ndarray  # (N,) str
    latents: np.ndarray  # (N, D) float32, the embedding's latents
    names: np.ndarray  # (N,) object
    artists: np.ndarray  # (N,) object
    durations_s: np.ndarray  # (N,) float, NaN when unknown
    row_of: dict[str, int] = field(init=False, repr=False)
    """track_id -> row, derived from ``track_ids``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "row_of", {t: i for i, t in enumerate(self.track_ids)})

    @classmethod
    def from_embedding(
        cls, track_ids: np.ndarray, latents: np.ndarray, metadata: Any = None
    ) -> CatalogTable:
        """Align catalog metadata (a DataFrame indexed by track_id) with the embedding."""
        n = len(track_ids)
        names = np.full(n, None, object)
        artists = np.full(n, None, object)
        durations = np.full(n, np.nan)
        if metadata is not None:
            aligned = metadata.reindex(list(track_ids))
            # Some catalog rows have no name/artist (NaN): they are reported as null.
            names = np.asarray(
                [v if isinstance(v, str) else None for v in aligned["track_name"]], object
            )
            artists = np.asarray(
                [v if isinstance(v, str) else None for v in aligned["track_artist"]], object
            )
            durations = aligned["duration_ms"].to_numpy(np.float64) / 1000.0
        return cls(
            np.asarray(track_ids, object),
            np.asarray(latents, np.float32),
            names,
            artists,
            durations,
        )

    def row(self, track_id: str) -> int | None:
        return self.row_of.get(track_id)
