"""Build and run offline training on RLlib: offline PPO, MARWIL or BC on logged sessions.

Where it sits: row-per-step offline data (rl/feedback/offline_steps.py, or synthetic.py) ->
``write_session_episodes`` (Ray Data) -> ``build_algorithm`` (RLlib, MARWIL's offline
loop) -> ``train`` iterations, checkpointed every few so an interrupted run resumes -> an
RLlib checkpoint the registry stores.

All three algorithms read the same whole-session episodes through ``SessionPreLearner``
and train the same ``CandidateActorCriticModule``, so their comparison is about the loss
only. Needs a running Ray (``ray.init``) -- the CLI starts a local one.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.bc import BCConfig
from ray.rllib.algorithms.marwil import MARWILConfig

from rl import storage
from rl.decision.observation import ObservationLayout
from rl.registry import MODULE_SUBPATH, copy_tree
from rl.training.config import TrainConfig
from rl.training.episodes import EpisodeDataset, SessionPreLearner, write_session_episodes
from rl.training.module import action_space, module_spec, observation_space
from rl.training.ppo_learner import OfflinePPOConfig


def build_algorithm(
    config: TrainConfig, episodes: EpisodeDataset, layout: ObservationLayout
) -> Algorithm:
    """An RLlib algorithm reading ``episodes`` (written by write_session_episodes)."""
    return rllib_config(config, episodes, layout).build_algo()


def rllib_config(
    config: TrainConfig, episodes: EpisodeDataset, layout: ObservationLayout
) -> AlgorithmConfig:
    """The RLlib algorithm config of ``config`` (built by ``build_algorithm``)."""
    if config.algo == "offline-ppo":
        algo_config: Any = OfflinePPOConfig().training(
            clip_param=config.clip,
            entropy_coeff=config.entropy_coeff,
            lambda_=config.lambda_,
            normalize_advantages=config.normalize_advantages,
            vf_coeff=config.vf_coeff,
        )
    elif config.algo == "marwil":
        algo_config = MARWILConfig().training(beta=config.marwil_beta, vf_coeff=config.vf_coeff)
        # MARWIL learns from discounted Monte-Carlo returns over the whole session.
        algo_config.lambda_ = 1.0
    else:
        algo_config = BCConfig()
    fs, path = storage.resolve(episodes.uri)
    algo_config = (
        algo_config.environment(
            observation_space=observation_space(layout), action_space=action_space(layout)
        )
        .rl_module(rl_module_spec=module_spec(layout, config.hidden_sizes))
        .training(
            lr=config.lr,
            gamma=config.gamma,
            grad_clip=config.grad_clip,
            train_batch_size_per_learner=config.train_batch_size,
        )
        .offline_data(
            input_=[path],
            input_filesystem=None if storage.is_local(episodes.uri) else fs,
            input_read_episodes=True,
            input_read_batch_size=config.sessions_per_read_batch,
            prelearner_class=SessionPreLearner,
            dataset_num_iters_per_learner=config.updates_per_iteration,
            # The connector output does not depend on the weights (advantages are
            # computed in the learner), so decoding once and caching is exact.
            materialize_mapped_data=True,
            map_batches_kwargs={"concurrency": 1},
        )
        .learners(
            num_learners=config.num_learners,
            custom_resources_per_learner=dict(config.custom_resources_per_learner),
        )
        .evaluation(off_policy_estimation_methods={})
        .debugging(seed=config.seed)
        .reporting(min_time_s_per_iteration=0)
    )
    return algo_config


@dataclass
class IterationReport:
    """What one training iteration did (printed by the CLI, kept in the registry)."""

    iteration: int
    losses: dict[str, float]
    samples: int
    seconds: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


@dataclass
class TrainingRun:
    """The outcome of ``train``: the checkpoint and the per-iteration history."""

    checkpoint_uri: str
    episodes: EpisodeDataset
    history: list[IterationReport] = field(default_factory=list)
    module_weights: dict[str, Any] = field(default_factory=dict)
    """The trained module's state as the learner held it at the end (numpy arrays)."""
    start_weights: dict[str, Any] = field(default_factory=dict)
    """The module's state before this process's first iteration (restored or initial)."""
    resumed_from_iteration: int = 0
    """The checkpointed iteration an interrupted run was resumed from (0 = not resumed)."""

    def final_metrics(self) -> dict[str, float]:
        last = self.history[-1]
        total_samples = sum(r.samples for r in self.history)
        total_seconds = sum(r.seconds for r in self.history)
        return {
            **{f"final_{k}": v for k, v in last.losses.items()},
            **{f"first_{k}": v for k, v in self.history[0].losses.items()},
            "iterations": float(len(self.history)),
            "samples_trained": float(total_samples),
            "train_seconds": total_seconds,
            "samples_per_s": total_samples / total_seconds if total_seconds else 0.0,
            "resumed_from_iteration": float(self.resumed_from_iteration),
        }


LOSS_KEYS = ("total_loss", "policy_loss", "vf_loss", "entropy", "mean_ratio", "clip_fraction")


def iteration_losses(result: dict[str, Any]) -> dict[str, float]:
    """Pick the per-module loss figures out of an RLlib result dict."""
    module_results = result.get("learners", {}).get("default_policy", {})
    losses = {k: float(module_results[k]) for k in LOSS_KEYS if k in module_results}
    if "total_loss" not in losses and "policy_loss" in losses:
        # MARWIL/BC report policy (and value) loss only; keep a comparable total.
        losses["total_loss"] = losses["policy_loss"] + losses.get("vf_loss", 0.0)
    return losses


CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "LATEST.json"
EPISODES_FILE = "episodes.json"
# Settings a resumed run may change: how long it runs and how it is spread over a cluster.
RESUMABLE_CHANGES = frozenset(
    {"iterations", "checkpoint_every", "num_learners", "custom_resources_per_learner"}
)


def latest_checkpoint(work_uri: str) -> dict[str, Any] | None:
    """The ``LATEST.json`` pointer of a run folder (iteration, checkpoint, config,
    history), with ``checkpoint_uri`` resolved against ``work_uri``; None if absent."""
    pointer_uri = storage.join(work_uri, CHECKPOINTS_DIR, LATEST_FILE)
    if not storage.exists(pointer_uri):
        return None
    latest = storage.read_json(pointer_uri)
    latest["checkpoint_uri"] = storage.join(work_uri, CHECKPOINTS_DIR, latest["checkpoint"])
    return latest


def _save_checkpoint(
    algo: Algorithm, work_uri: str, config: TrainConfig, history: list[IterationReport]
) -> str:
    """Save the algorithm after ``history[-1]``; then move LATEST.json onto it.

    The pointer is written last, in one atomic object write, so a node lost mid-save
    leaves LATEST.json on the previous complete checkpoint.
    """
    name = f"iter_{history[-1].iteration:04d}"
    checkpoint_uri = storage.join(work_uri, CHECKPOINTS_DIR, name)
    fs, path = storage.resolve(checkpoint_uri)
    algo.save_to_path(path, filesystem=None if storage.is_local(checkpoint_uri) else fs)
    storage.write_json(
        storage.join(work_uri, CHECKPOINTS_DIR, LATEST_FILE),
        {
            "iteration": history[-1].iteration,
            "checkpoint": name,
            "config": config.to_dict(),
            "history": [asdict(r) for r in history],
            "saved_at": time.time(),
        },
    )
    return checkpoint_uri


def _restore_learner(learner_group: Any, checkpoint_uri: str) -> None:
    """Load weights and optimiser state from an algorithm checkpoint into the learners.

    Only the learner comes back: the data pipeline and counters belong to this run.
    """
    learner_uri = storage.join(checkpoint_uri, "learner_group")
    if not storage.exists(learner_uri):
        raise FileNotFoundError(f"{checkpoint_uri} is not an algorithm checkpoint")
    with tempfile.TemporaryDirectory(prefix="encore-resume-") as local:
        if storage.is_local(learner_uri):
            local = storage.resolve(learner_uri)[1]
        else:
            copy_tree(learner_uri, local)
        learner_group.restore_from_path(local)


def _check_resumable(saved: dict[str, Any], config: TrainConfig, work_uri: str) -> None:
    current = config.to_dict()
    changed = sorted(
        k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]
    )
    if changed:
        raise ValueError(
            f"cannot resume {work_uri}: its checkpoints were trained with different "
            + ", ".join(f"{k} ({saved.get(k)!r} != {current[k]!r})" for k in changed)
        )


def _session_episodes(steps_uri: str | list[str], work_uri: str, reuse: bool) -> EpisodeDataset:
    """The run's episodes: reused from an interrupted run, else (re)written."""
    meta_uri = storage.join(work_uri, EPISODES_FILE)
    episodes_uri = storage.join(work_uri, "episodes")
    if reuse and storage.exists(meta_uri):
        meta = storage.read_json(meta_uri)
        return EpisodeDataset(episodes_uri, meta["num_sessions"], meta["num_steps"])
    fs, path = storage.resolve(episodes_uri)
    if storage.exists(episodes_uri):
        fs.delete_dir(path)  # Ray Data appends files: a half-written earlier try would double
    episodes = write_session_episodes(steps_uri, episodes_uri)
    storage.write_json(
        meta_uri, {"num_sessions": episodes.num_sessions, "num_steps": episodes.num_steps}
    )
    return episodes


def train(
    config: TrainConfig,
    steps_uri: str | list[str],
    layout: ObservationLayout,
    work_uri: str,
    resume_from: str | None = None,
    on_iteration: Callable[[IterationReport], None] | None = None,
    resume_run: bool = False,
) -> TrainingRun:
    """Train up to ``config.iterations`` iterations on the row-per-step data at
    ``steps_uri`` (a directory URI or a list of parquet file URIs).

    ``work_uri`` (the run folder) receives ``episodes/`` and, every
    ``config.checkpoint_every`` iterations and after the last,
    ``checkpoints/iter_NNNN`` plus the ``checkpoints/LATEST.json`` pointer.

    ``resume_run``: continue an interrupted run in ``work_uri`` from its latest
    checkpoint (weights, optimiser state, history) at the next iteration, up to
    ``config.iterations`` in total; starts afresh when the folder holds no checkpoint, so
    a resubmitted job can run the same command. Without it, a folder that already holds
    checkpoints is refused. ``resume_from``: another run's algorithm checkpoint whose
    weights and optimiser state start this run (fine-tuning), counted from iteration 1.
    """
    latest = latest_checkpoint(work_uri)
    if latest is not None and not resume_run:
        raise FileExistsError(
            f"{work_uri} already holds checkpoints (iteration {latest['iteration']}); "
            "resume it or use another run folder"
        )
    if latest is not None:
        _check_resumable(latest["config"], config, work_uri)
    episodes = _session_episodes(steps_uri, work_uri, reuse=latest is not None)
    algo = build_algorithm(config, episodes, layout)
    learner_group: Any = algo.learner_group
    history: list[IterationReport] = []
    resumed_from_iteration = 0
    try:
        if latest is not None:
            _restore_learner(learner_group, latest["checkpoint_uri"])
            history = [IterationReport(**r) for r in latest["history"]]
            resumed_from_iteration = int(latest["iteration"])
        elif resume_from is not None:
            _restore_learner(learner_group, resume_from)
        start_weights = learner_group.get_weights()["default_policy"]
        checkpoint_uri = latest["checkpoint_uri"] if latest is not None else None
        samples_per_iteration = (
            config.train_batch_size * config.updates_per_iteration * max(1, config.num_learners)
        )
        for iteration in range(resumed_from_iteration + 1, config.iterations + 1):
            start = time.perf_counter()
            result = algo.train()
            report = IterationReport(
                iteration=iteration,
                losses=iteration_losses(result),
                samples=samples_per_iteration,
                seconds=time.perf_counter() - start,
            )
            history.append(report)
            if iteration % config.checkpoint_every == 0 or iteration == config.iterations:
                checkpoint_uri = _save_checkpoint(algo, work_uri, config, history)
            if on_iteration is not None:
                on_iteration(report)
        if checkpoint_uri is None:
            raise ValueError("nothing trained: config.iterations must be >= 1")
        module_weights = learner_group.get_weights()["default_policy"]
    finally:
        # Drop the Ray Data iterator while Ray is still up (else it logs an error at exit).
        offline_data = getattr(algo, "offline_data", None)
        if offline_data is not None:
            offline_data.batch_iterators = None
        local_learner = getattr(algo.learner_group, "_learner", None)
        if local_learner is not None and hasattr(local_learner, "iterator"):
            local_learner.iterator = None
        algo.stop()
        del algo
        gc.collect()
    return TrainingRun(
        checkpoint_uri=checkpoint_uri,
        episodes=episodes,
        history=history,
        module_weights=module_weights,
        start_weights=start_weights,
        resumed_from_iteration=resumed_from_iteration,
    )


def module_checkpoint_uri(checkpoint_uri: str) -> str:
    """The RLModule inside an algorithm checkpoint."""
    return storage.join(checkpoint_uri, *MODULE_SUBPATH)
