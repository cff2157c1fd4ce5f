"""Model registry: one version per training run, and the pointer to the one in production.

Where it sits: ``encore train`` / ``encore finetune`` register the checkpoint of each run
here; ``encore promote`` moves the production pointer; the served Scorer and the
simulator load a version through ``PolicyScorer``. The registry lives under a storage URI
(local path or s3://...), all I/O through ``rl.storage``.

Layout under the registry URI::

    versions/<version>/manifest.json   # written last: a version without it is incomplete
    versions/<version>/checkpoint/...  # the RLlib algorithm checkpoint of the run
    versions/<version>/song_table/...  # the per-song feature table it was trained with
                                       # (rl/longterm/song_table.py), when its layout has one
    PRODUCTION.json                    # {"version", "promoted_at", "previous"}

The manifest records the training config, the observation layout, the data read (paths
and row counts), metrics, the parent version, and a sha256 of every checkpoint file;
loading re-checks them, so a truncated or tampered version is refused, not served.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow.fs as pafs

from rl import storage
from rl.decision.observation import ObservationLayout

MANIFEST_FORMAT = "encore-model/1"
MODULE_SUBPATH = ("learner_group", "learner", "rl_module", "default_policy")
PRODUCTION_POINTER = "PRODUCTION.json"
_VERSION_PATTERN = re.compile(r"^v(\d{4,})$")


class RegistryError(RuntimeError):
    """A version is missing, incomplete, corrupt or incompatible."""


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version (the manifest's content)."""

    version: str
    algo: str
    created_at: float
    train_config: dict[str, Any]
    layout: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, float]
    parent: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "version": self.version,
            "algo": self.algo,
            "created_at": self.created_at,
            "train_config": self.train_config,
            "layout": self.layout,
            "data": self.data,
            "metrics": self.metrics,
            "parent": self.parent,
            "history": self.history,
            "checksums": self.checksums,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ModelVersion:
        if state.get("format") != MANIFEST_FORMAT:
            raise RegistryError(
                f"manifest format {state.get('format')!r} is not {MANIFEST_FORMAT!r}"
            )
        try:
            return cls(
                version=str(state["version"]),
                algo=str(state["algo"]),
                created_at=float(state["created_at"]),
                train_config=dict(state["train_config"]),
                layout=dict(state["layout"]),
                data=dict(state["data"]),
                metrics={k: float(v) for k, v in state["metrics"].items()},
                parent=state.get("parent"),
                history=list(state.get("history", [])),
                checksums=dict(state["checksums"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"manifest is missing or has a bad field: {exc}") from exc

    @property
    def observation_layout(self) -> ObservationLayout:
        return ObservationLayout.from_dict(self.layout)


def copy_tree(src_uri: str, dst_uri: str) -> None:
    src_fs, src_path = storage.resolve(src_uri)
    dst_fs, dst_path = storage.resolve(dst_uri)
    dst_fs.create_dir(dst_path, recursive=True)
    pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)


def file_checksums(root_uri: str) -> dict[str, str]:
    """sha256 of every file under ``root_uri``, keyed by path relative to it."""
    fs, root = storage.resolve(root_uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    sums = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            relative = info.path[len(root) :].lstrip("/")
            with fs.open_input_stream(info.path) as stream:
                sums[relative] = hashlib.sha256(stream.read()).hexdigest()
    return dict(sorted(sums.items()))


def next_version_name(versions_uri: str) -> str:
    """The next ``vNNNN`` name under a folder of versions (also the retrieval indexes')."""
    numbers = [
        int(m.group(1))
        for name in storage.list_dir(versions_uri)
        if (m := _VERSION_PATTERN.match(name))
    ]
    return f"v{max(numbers, default=0) + 1:04d}"


def write_production_pointer(root_uri: str, version: str, previous: str | None) -> None:
    """Point ``root_uri``'s production at ``version``: one atomic object write."""
    storage.write_json(
        storage.join(root_uri, PRODUCTION_POINTER),
        {"version": version, "promoted_at": time.time(), "previous": previous},
    )


def read_production_pointer(root_uri: str) -> dict[str, Any] | None:
    """``root_uri``'s production pointer ({"version", "promoted_at", "previous"}), or None."""
    pointer = storage.join(root_uri, PRODUCTION_POINTER)
    return storage.read_json(pointer) if storage.exists(pointer) else None


EntryT = TypeVar("EntryT")


class VersionDirectory(Generic[EntryT]):
    """What every registry of versions shares: ``<uri>/versions/<v>/`` folders, each with a
    manifest that ``get`` reads (or refuses with ``error``), and the atomic production
    pointer at ``<uri>``. The model registry and the retrieval-index registry
    (rl/songs/index_registry.py) differ only in what a version holds."""

    error: type[Exception] = RuntimeError

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def version_uri(self, version: str) -> str:
        return storage.join(self.uri, "versions", version)

    def get(self, version: str) -> EntryT:
        raise NotImplementedError

    def list_versions(self) -> list[EntryT]:
        """Complete versions, oldest first (incomplete or unreadable ones are skipped)."""
        entries = []
        for name in storage.list_dir(storage.join(self.uri, "versions")):
            try:
                entries.append(self.get(name))
            except self.error:
                continue
        return sorted(entries, key=lambda e: e.version)  # type: ignore[attr-defined]

    def production_pointer(self) -> dict[str, Any] | None:
        """The production pointer ({"version", "promoted_at", "previous"}), or None."""
        return read_production_pointer(self.uri)

    def production_version(self) -> str | None:
        pointer = self.production_pointer()
        return None if pointer is None else str(pointer["version"])


class ModelRegistry(VersionDirectory[ModelVersion]):
    """Versions of trained policies under ``uri``, with an atomic production pointer."""

    error = RegistryError

    # --- paths ---------------------------------------------------------------------------

    def checkpoint_uri(self, version: str) -> str:
        return storage.join(self.version_uri(version), "checkpoint")

    def module_uri(self, version: str) -> str:
        return storage.join(self.checkpoint_uri(version), *MODULE_SUBPATH)

    def song_table_uri(self, version: str) -> str:
        return storage.join(self.version_uri(version), "song_table")

    # --- writing -------------------------------------------------------------------------
    def _next_version(self) -> str:
        return next_version_name(storage.join(self.uri, "versions"))

    def register(
        self,
        checkpoint_uri: str,
        *,
        algo: str,
        train_config: dict[str, Any],
        layout: ObservationLayout,
        data: dict[str, Any],
        metrics: dict[str, float],
        parent: str | None = None,
        history: list[dict[str, Any]] | None = None,
        song_table: Any | None = None,
    ) -> ModelVersion:
        """Copy an algorithm checkpoint in as a new version; the manifest is written last.

        ``song_table``: the ``SongFeatureTable`` the policy was trained with (required when
        the layout has song features): saved in the version so it is served, and
        hot-swapped, with these weights."""
        if parent is not None:
            self.get(parent)  # the parent must exist and be readable
        if layout.song_feature_dim and song_table is None:
            raise RegistryError("the layout has song features: register the song_table too")
        version = self._next_version()
        target = self.checkpoint_uri(version)
        copy_tree(checkpoint_uri, target)
        if not storage.exists(self.module_uri(version)):
            raise RegistryError(f"{checkpoint_uri} holds no RLModule at {'/'.join(MODULE_SUBPATH)}")
        if song_table is not None:
            song_table.save(self.song_table_uri(version))
            data = {**data, "song_table_checksums": file_checksums(self.song_table_uri(version))}
        entry = ModelVersion(
            version=version,
            algo=algo,
            created_at=time.time(),
            train_config=train_config,
            layout=layout.to_dict(),
            data=data,
            metrics={k: float(v) for k, v in metrics.items()},
            parent=parent,
            history=history or [],
            checksums=file_checksums(target),
        )
        storage.write_json(
            storage.join(self.version_uri(version), "manifest.json"), entry.to_dict()
        )
        return entry

    def annotate(self, version: str, key: str, value: Any) -> ModelVersion:
        """Add evidence (e.g. the promotion gate's) to a version's manifest ``data[key]``;
        the checkpoint and its checksums are untouched."""
        entry = self.get(version)
        updated = ModelVersion(**{**entry.__dict__, "data": {**entry.data, key: value}})
        storage.write_json(
            storage.join(self.version_uri(version), "manifest.json"), updated.to_dict()
        )
        return updated

    def promote(self, version: str) -> None:
        """Point production at ``version`` (verified first); one atomic object write."""
        self.verify(version)
        write_production_pointer(self.uri, version, previous=self.production_version())

    # --- reading -------------------------------------------------------------------------
    def get(self, version: str) -> ModelVersion:
        manifest_uri = storage.join(self.version_uri(version), "manifest.json")
        if not storage.exists(manifest_uri):
            raise RegistryError(
                f"version {version!r} not found or incomplete in {self.uri} (no manifest)"
            )
        try:
            state = storage.read_json(manifest_uri)
        except ValueError as exc:
            raise RegistryError(f"version {version!r}: manifest is not valid JSON: {exc}") from exc
        entry = ModelVersion.from_dict(state)
        if entry.version != version:
            raise RegistryError(f"version {version!r}: manifest names {entry.version!r}")
        return entry

    def verify(self, version: str) -> ModelVersion:
        """Check the manifest and every checkpoint file's checksum; raise RegistryError."""
        entry = self.get(version)
        if not entry.checksums:
            raise RegistryError(f"version {version!r}: manifest lists no checkpoint files")
        actual = file_checksums(self.checkpoint_uri(version))
        for relative, expected in entry.checksums.items():
            if relative not in actual:
                raise RegistryError(f"version {version!r} is corrupt: {relative} is missing")
            if actual[relative] != expected:
                raise RegistryError(
                    f"version {version!r} is corrupt: checksum of {relative} differs"
                )
        expected_table = entry.data.get("song_table_checksums")
        if expected_table is not None and (
            file_checksums(self.song_table_uri(version)) != expected_table
        ):
            raise RegistryError(f"version {version!r} is corrupt: its song table differs")
        return entry

    def song_features_of(self, version: str, layout: ObservationLayout) -> Any | None:
        """The version's table as an ``ObservationSongFeatures`` (None without song features)."""
        if not layout.song_feature_dim:
            return None
        from rl.longterm.song_table import ObservationSongFeatures

        table = self.load_song_table(version)
        if table is None:
            raise RegistryError(f"version {version!r} has song features but no song table")
        return ObservationSongFeatures(table, layout)

    def load_song_table(self, version: str) -> Any | None:
        """The ``SongFeatureTable`` a version was trained with (None when it has none)."""
        from rl.longterm.song_table import SongFeatureTable

        uri = self.song_table_uri(version)
        return SongFeatureTable.load(uri) if SongFeatureTable.exists(uri) else None

    def load_module(
        self, version: str | None = None, expected_layout: ObservationLayout | None = None
    ) -> Any:
        """The trained RLModule of ``version`` (default: production), verified."""
        from ray.rllib.core.rl_module.rl_module import RLModule

        version = version or self.production_version()
        if version is None:
            raise RegistryError(f"no version given and no production version in {self.uri}")
        entry = self.verify(version)
        # A policy with song features serves an observation without them (the Scorer
        # adds them from the version's table), so those are compared apart.
        if expected_layout is not None and (
            entry.observation_layout.without_song_features()
            != expected_layout.without_song_features()
        ):
            raise RegistryError(
                f"version {version!r} was trained for layout {entry.layout}, "
                f"incompatible with {expected_layout.to_dict()}"
            )
        module_uri = self.module_uri(version)
        with tempfile.TemporaryDirectory(prefix="encore-model-") as local:
            if storage.is_local(module_uri):
                local_path = storage.resolve(module_uri)[1]
            else:
                copy_tree(module_uri, local)
                local_path = local
            try:
                module: Any = RLModule.from_checkpoint(local_path)
            except ModuleNotFoundError as exc:
                # RLlib pickles class paths; a version saved by code whose classes have since
                # moved names the missing module here instead of failing deep in unpickling.
                raise RegistryError(
                    f"version {version!r} was saved by code whose class paths no longer exist "
                    f"({exc}); retrain it, or load it with the Encore release that made it"
                ) from exc
            except Exception as exc:  # unpickling errors come in many types
                raise RegistryError(f"version {version!r}: module does not load: {exc}") from exc
        layout = getattr(module, "layout", None)
        if layout is not None and layout != entry.observation_layout:
            raise RegistryError(f"version {version!r}: module layout differs from its manifest")
        module.eval()
        return module


class PolicyScorer:
    """A registered policy as plain torch, meeting the ``DecisionPolicy`` protocol.

    ``action_probabilities(obs (B, size)) -> (B, k)`` (0 on padded candidates, rows sum to
    1) and ``value(obs) -> (B,)``; for the served Scorer and the simulator. With
    ``greedy=True`` the probabilities are one-hot on the policy's argmax (the blog's
    greedy pick), so a simulator arm or an A/B arm can serve it deterministically.
    """

    def __init__(
        self, module: Any, name: str, greedy: bool = False, song_features: Any | None = None
    ) -> None:
        self.module = module
        self.greedy = greedy
        self.name = f"{name} (greedy)" if greedy else name
        self.layout: ObservationLayout = module.layout
        self.song_features = song_features
        """``ObservationSongFeatures`` of the version's table: lets the policy answer
        observations built without song features (the served path)."""

    @classmethod
    def from_registry(
        cls, registry: ModelRegistry | str, version: str | None = None, greedy: bool = False
    ) -> PolicyScorer:
        registry = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
        version = version or registry.production_version()
        if version is None:
            raise RegistryError(f"no production version in {registry.uri}")
        entry = registry.get(version)
        module = registry.load_module(version)
        return cls(
            module,
            name=f"{entry.algo}:{version}",
            greedy=greedy,
            song_features=registry.song_features_of(version, module.layout),
        )

    def _tensor(self, obs: np.ndarray) -> Any:
        import torch

        obs = np.asarray(obs, np.float32)
        if self.song_features is not None and obs.ndim == 2 and obs.shape[1] < self.layout.size:
            obs = self.song_features(obs)
        if obs.ndim != 2 or obs.shape[1] < self.layout.size:
            raise ValueError(f"obs must be (B, {self.layout.size}), got {obs.shape}")
        # Song features sit after the mask: a policy trained without them reads the prefix
        # of an observation that carries them.
        return torch.from_numpy(np.ascontiguousarray(obs[:, : self.layout.size]))

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self.module.candidate_logits(self._tensor(obs))
            probs = torch.softmax(logits, dim=-1).numpy().astype(np.float64)
        if self.greedy:
            return np.eye(self.layout.k)[probs.argmax(axis=1)]
        return probs

    def value(self, obs: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module.state_values(self._tensor(obs)).numpy().astype(np.float64)
