"""Versions of the Retriever's index, and the pointer to the one in production.

Where it sits: ``encore index build`` saves what rl/songs/index_build.py built as a new
version here; ``encore index promote`` moves the production pointer; every Retriever replica
follows it (rl/songs/index_slot.py). The same layout, checksums and atomic pointer as the
model registry (rl/registry.py, whose helpers this reuses), under a storage URI::

    versions/<version>/manifest.json    # written last: a version without it is incomplete
    versions/<version>/latents.npy      # (N, D) float32 song latents, row = catalog row
    versions/<version>/track_ids.parquet
    versions/<version>/index.faiss      # the faiss index (kinds ivf and hnsw)
    PRODUCTION.json                     # {"version", "promoted_at", "previous"}

The manifest records the kind and its search setting, the recall@k against exact measured
at build time, build time and memory, the catalog it was built over (a fingerprint of its
latents and track ids, so a Retriever serving another embedding refuses it), and the sha256
of every file; loading re-checks them, so a truncated or tampered version is refused.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rl import storage
from rl.registry import (
    VersionDirectory,
    file_checksums,
    next_version_name,
    write_production_pointer,
)
from rl.songs.index_build import BuiltIndex, FaissSearcher
from rl.songs.retrieval import KnnIndex

INDEX_FORMAT = "encore-index/1"
DATA_FILES = ("latents.npy", "track_ids.parquet")
FAISS_FILE = "index.faiss"


class IndexRegistryError(RuntimeError):
    """An index version is missing, incomplete, corrupt or incompatible."""


def catalog_fingerprint(latents: np.ndarray, track_ids: Any) -> str:
    """sha256 of a catalog's latents (float32, C order) and its track ids, in row order."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(latents, dtype=np.float32).tobytes())
    digest.update("\n".join(str(t) for t in track_ids).encode("utf-8"))
    return digest.hexdigest()


@dataclass(frozen=True)
class IndexManifest:
    """A saved index version (the manifest's content)."""

    version: str
    kind: str
    params: dict[str, Any]
    report: dict[str, Any]
    source: dict[str, Any]
    """What it was built over: {"embedding_uri", "fingerprint", "songs", "dim"}."""
    build_config: dict[str, Any]
    created_at: float
    checksums: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"format": INDEX_FORMAT, **self.__dict__}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> IndexManifest:
        if state.get("format") != INDEX_FORMAT:
            raise IndexRegistryError(
                f"index manifest format {state.get('format')!r} is not {INDEX_FORMAT!r}"
            )
        try:
            return cls(**{name: state[name] for name in cls.__dataclass_fields__})
        except KeyError as exc:
            raise IndexRegistryError(f"index manifest is missing {exc}") from exc


class IndexRegistry(VersionDirectory[IndexManifest]):
    """Index versions under ``uri``, with an atomic production pointer."""

    error = IndexRegistryError

    # --- writing -------------------------------------------------------------------------
    def register(
        self, built: BuiltIndex, *, source: dict[str, Any], build_config: dict[str, Any]
    ) -> IndexManifest:
        """Save ``built`` as a new version; the manifest (with checksums) is written last."""
        version = next_version_name(storage.join(self.uri, "versions"))
        root = self.version_uri(version)
        buffer = io.BytesIO()
        np.save(buffer, built.index.latents, allow_pickle=False)
        storage.write_bytes(storage.join(root, "latents.npy"), buffer.getvalue())
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"track_id": built.index.track_ids.astype(str)}), sink)
        storage.write_bytes(storage.join(root, "track_ids.parquet"), sink.getvalue().to_pybytes())
        if isinstance(built.index.searcher, FaissSearcher):
            import faiss

            blob = faiss.serialize_index(built.index.searcher.index)
            storage.write_bytes(storage.join(root, FAISS_FILE), blob.tobytes())
        entry = IndexManifest(
            version=version,
            kind=built.kind,
            params=built.params,
            report=built.report,
            source=source,
            build_config=build_config,
            created_at=time.time(),
            checksums=file_checksums(root),
        )
        storage.write_json(storage.join(root, "manifest.json"), entry.to_dict())
        return entry

    def promote(self, version: str) -> None:
        """Point production at ``version`` (verified first); one atomic object write."""
        self.verify(version)
        write_production_pointer(self.uri, version, previous=self.production_version())

    # --- reading -------------------------------------------------------------------------
    def get(self, version: str) -> IndexManifest:
        manifest_uri = storage.join(self.version_uri(version), "manifest.json")
        if not storage.exists(manifest_uri):
            raise IndexRegistryError(
                f"index version {version!r} not found or incomplete in {self.uri} (no manifest)"
            )
        try:
            entry = IndexManifest.from_dict(storage.read_json(manifest_uri))
        except ValueError as exc:
            raise IndexRegistryError(f"index version {version!r}: bad manifest: {exc}") from exc
        if entry.version != version:
            raise IndexRegistryError(f"index version {version!r}: manifest names {entry.version!r}")
        return entry

    def verify(self, version: str) -> IndexManifest:
        """Check the manifest and every file's checksum; raise ``IndexRegistryError``."""
        entry = self.get(version)
        needed = DATA_FILES + ((FAISS_FILE,) if entry.kind != "exact" else ())
        actual = file_checksums(self.version_uri(version))
        for name in needed:
            if name not in entry.checksums or name not in actual:
                raise IndexRegistryError(f"index version {version!r} is corrupt: {name} is missing")
            if actual[name] != entry.checksums[name]:
                raise IndexRegistryError(
                    f"index version {version!r} is corrupt: checksum of {name} differs"
                )
        return entry

    def load(
        self, version: str, expected_fingerprint: str | None = None, threads: int = 1
    ) -> tuple[KnnIndex, IndexManifest]:
        """The verified index of ``version``, ready to query.

        ``expected_fingerprint``: the catalog the caller serves (``catalog_fingerprint``);
        an index built over another catalog is refused, since its rows would name songs
        the rest of the service does not know or place them elsewhere.
        """
        entry = self.verify(version)
        if expected_fingerprint is not None and entry.source.get("fingerprint") != (
            expected_fingerprint
        ):
            raise IndexRegistryError(
                f"index version {version!r} was built over another catalog "
                f"({entry.source.get('songs')} songs from {entry.source.get('embedding_uri')}), "
                "not the embedding this service serves: rebuild it with `encore index build`"
            )
        root = self.version_uri(version)
        latents = np.load(io.BytesIO(storage.read_bytes(storage.join(root, "latents.npy"))))
        table = pq.read_table(
            io.BytesIO(storage.read_bytes(storage.join(root, "track_ids.parquet")))
        )
        track_ids = table["track_id"].to_numpy(zero_copy_only=False).astype(object)
        if entry.kind == "exact":
            return KnnIndex(latents, track_ids), entry
        import faiss

        faiss.omp_set_num_threads(threads)
        blob = np.frombuffer(storage.read_bytes(storage.join(root, FAISS_FILE)), dtype=np.uint8)
        index = faiss.deserialize_index(blob)
        if index.ntotal != len(latents) or index.d != latents.shape[1]:
            raise IndexRegistryError(
                f"index version {version!r}: the faiss index holds {index.ntotal} x {index.d}, "
                f"its latents {latents.shape}"
            )
        searcher = FaissSearcher(index, breadth=int(entry.params["breadth"]))
        return KnnIndex(latents, track_ids, searcher=searcher), entry
