"""Build and run offline training on RLlib: offline PPO, MARWIL or BC on logged sessions.

Where it sits: row-per-step offline data (rl/offline_data.py, or synthetic.py) ->
``write_session_episodes`` (Ray Data) -> ``build_algorithm`` (RLlib, MARWIL's offline
loop) -> ``train`` iterations -> an RLlib checkpoint the registry stores.

All three algorithms read the same whole-session episodes through ``SessionPreLearner``
and train the same ``CandidateActorCriticModule``, so their comparison is about the loss
only. Needs a running Ray (``ray.init``) -- the CLI starts a local one.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.bc import BCConfig
from ray.rllib.algorithms.marwil import MARWILConfig

from rl import storage
from rl.observation import ObservationLayout
from rl.registry import copy_tree
from rl.training.config import TrainConfig
from rl.training.episodes import EpisodeDataset, SessionPreLearner, write_session_episodes
from rl.training.module import action_space, module_spec, observation_space
from rl.training.ppo_learner import OfflinePPOConfig

MODULE_SUBPATH = ("learner_group", "learner", "rl_module", "default_policy")
"""Where an algorithm checkpoint keeps the trained RLModule."""


def build_algorithm(
    config: TrainConfig, episodes: EpisodeDataset, layout: ObservationLayout
) -> Algorithm:
    """An RLlib algorithm reading ``episodes`` (written by write_session_episodes)."""
    if config.algo == "offline-ppo":
        rllib_config: Any = OfflinePPOConfig().training(
            clip_param=config.clip,
            entropy_coeff=config.entropy_coeff,
            lambda_=config.lambda_,
            normalize_advantages=config.normalize_advantages,
            vf_coeff=config.vf_coeff,
        )
    elif config.algo == "marwil":
        rllib_config = MARWILConfig().training(beta=config.marwil_beta, vf_coeff=config.vf_coeff)
        # MARWIL learns from discounted Monte-Carlo returns over the whole session.
        rllib_config.lambda_ = 1.0
    else:
        rllib_config = BCConfig()
    fs, path = storage.resolve(episodes.uri)
    rllib_config = (
        rllib_config.environment(
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
        .learners(num_learners=config.num_learners)
        .evaluation(off_policy_estimation_methods={})
        .debugging(seed=config.seed)
        .reporting(min_time_s_per_iteration=0)
    )
    return rllib_config.build_algo()


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


def train(
    config: TrainConfig,
    steps_uri: str | list[str],
    layout: ObservationLayout,
    work_uri: str,
    resume_from: str | None = None,
    on_iteration: Callable[[IterationReport], None] | None = None,
) -> TrainingRun:
    """Train ``config.iterations`` iterations on the row-per-step data at ``steps_uri``
    (a directory URI or a list of parquet file URIs).

    ``work_uri`` receives ``episodes/`` and ``checkpoint/``. ``resume_from`` is an
    algorithm checkpoint (a previous run's ``checkpoint/``) whose weights and optimiser
    state are restored before training (resume, fine-tuning).
    """
    episodes = write_session_episodes(steps_uri, storage.join(work_uri, "episodes"))
    algo = build_algorithm(config, episodes, layout)
    learner_group: Any = algo.learner_group
    try:
        if resume_from is not None:
            # Only the learner (weights + optimiser) comes back: the data pipeline and
            # counters belong to this run.
            learner_uri = storage.join(resume_from, "learner_group")
            if not storage.exists(learner_uri):
                raise FileNotFoundError(f"{resume_from} is not an algorithm checkpoint")
            with tempfile.TemporaryDirectory(prefix="encore-resume-") as local:
                if storage.is_local(learner_uri):
                    local = storage.resolve(learner_uri)[1]
                else:
                    copy_tree(learner_uri, local)
                learner_group.restore_from_path(local)
        history: list[IterationReport] = []
        samples_per_iteration = (
            config.train_batch_size * config.updates_per_iteration * max(1, config.num_learners)
        )
        for iteration in range(1, config.iterations + 1):
            start = time.perf_counter()
            result = algo.train()
            report = IterationReport(
                iteration=iteration,
                losses=iteration_losses(result),
                samples=samples_per_iteration,
                seconds=time.perf_counter() - start,
            )
            history.append(report)
            if on_iteration is not None:
                on_iteration(report)
        checkpoint_uri = storage.join(work_uri, "checkpoint")
        fs, path = storage.resolve(checkpoint_uri)
        algo.save_to_path(path, filesystem=None if storage.is_local(checkpoint_uri) else fs)
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
    )


def module_checkpoint_uri(checkpoint_uri: str) -> str:
    """The RLModule inside an algorithm checkpoint."""
    return storage.join(checkpoint_uri, *MODULE_SUBPATH)
