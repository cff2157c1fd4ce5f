"""Train-and-register and fine-tune-from-production: the steps behind ``encore train``
and ``encore finetune``, without the argument parsing.

Each run trains on row-per-step offline data, registers one registry version carrying its
config, layout, data read (files + rows), metrics, per-iteration history and parent.
Fine-tuning starts from the production version's weights and optimiser state and reads
only the data files that version has not seen (feedback logged since it was trained).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from rl import paths, storage
from rl.decision.observation import ObservationLayout
from rl.feedback.offline_steps_files import describe, parquet_files
from rl.registry import ModelRegistry, ModelVersion, RegistryError
from rl.training.config import TrainConfig
from rl.training.train import IterationReport, TrainingRun, train


def default_work_uri(algo: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return storage.join(paths.data_dir(), "runs", f"{stamp}-{algo}-{os.getpid()}")


def train_and_register(
    config: TrainConfig,
    data_files: list[str],
    layout: ObservationLayout,
    registry: ModelRegistry,
    *,
    parent: str | None = None,
    resume_checkpoint: str | None = None,
    work_uri: str | None = None,
    on_iteration: Callable[[IterationReport], None] | None = None,
    seen_paths: list[str] | None = None,
    resume_run: bool = False,
    song_table: Any | None = None,
) -> ModelVersion:
    """Train on ``data_files`` (parquet URIs) and register the result as a new version.

    ``seen_paths``: files earlier versions of the lineage read (kept for fine-tuning).
    ``resume_run``: continue the interrupted run in ``work_uri`` from its last checkpoint
    (see ``train``); the version's metrics record ``resumed_from_iteration``.
    """
    if resume_run and work_uri is None:
        raise ValueError("resuming a run needs its work_uri (the run folder)")
    data = describe(data_files)
    if data.rows == 0:
        raise ValueError("the offline data holds no rows")
    run = train(
        config,
        data_files,
        layout,
        work_uri or default_work_uri(config.algo),
        resume_from=resume_checkpoint,
        on_iteration=on_iteration,
        resume_run=resume_run,
    )
    return register_run(registry, run, config, data_files, layout, parent, seen_paths, song_table)


def register_run(
    registry: ModelRegistry,
    run: TrainingRun,
    config: TrainConfig,
    data_files: list[str],
    layout: ObservationLayout,
    parent: str | None = None,
    seen_paths: list[str] | None = None,
    song_table: Any | None = None,
) -> ModelVersion:
    """Register a finished training run: checkpoint, config, data read, metrics, history,
    and the ``SongFeatureTable`` its observations were built with (if any)."""
    return registry.register(
        run.checkpoint_uri,
        algo=config.algo,
        train_config=config.to_dict(),
        layout=layout,
        data={
            **describe(data_files).to_dict(),
            "sessions": run.episodes.num_sessions,
            "seen_paths": sorted(set(seen_paths or []) | set(data_files)),
        },
        metrics=run.final_metrics(),
        parent=parent,
        history=[{**asdict(r), "samples_per_s": r.samples_per_s} for r in run.history],
        song_table=song_table,
    )


def unseen_files(data_uri: str, parent: ModelVersion) -> list[str]:
    """Parquet files under ``data_uri`` that ``parent`` (and its ancestors' runs) did not read."""
    seen = set(parent.data.get("paths", [])) | set(parent.data.get("seen_paths", []))
    return [f for f in parquet_files(data_uri) if f not in seen]


def finetune_production(
    registry: ModelRegistry,
    data_uri: str,
    *,
    iterations: int,
    lr: float | None = None,
    work_uri: str | None = None,
    on_iteration: Callable[[IterationReport], None] | None = None,
) -> ModelVersion:
    """Continue the production version on the feedback logged since; register the child."""
    production = registry.production_version()
    if production is None:
        raise RegistryError(f"no production version in {registry.uri} to fine-tune")
    parent = registry.verify(production)
    new_files = unseen_files(data_uri, parent)
    if not new_files:
        raise ValueError(f"no feedback under {data_uri} logged since {production} was trained")
    config = replace(
        TrainConfig.from_dict(parent.train_config),
        iterations=iterations,
        lr=lr if lr is not None else parent.train_config["lr"],
    )
    return train_and_register(
        config,
        new_files,
        parent.observation_layout,
        registry,
        parent=production,
        resume_checkpoint=registry.checkpoint_uri(production),
        work_uri=work_uri,
        on_iteration=on_iteration,
        seen_paths=sorted(
            set(parent.data.get("paths", [])) | set(parent.data.get("seen_paths", []))
        ),
        # The child reads observations built with the parent's table (same features).
        song_table=registry.load_song_table(production),
    )
