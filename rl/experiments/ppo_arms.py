"""PPO actor-critic arms for the simulated A/B test, trained on the test's own history log.

Where it sits: ``encore ab-test --train-ppo return-days session`` calls ``train_ppo_arms`` after
``ab_test.build_world`` has simulated the history and before the banner. Per reward:

1. the history log -> row-per-step offline data with Ray Data: ``"return-days"`` through
   ``return_reward.write_long_term_offline_steps`` (immediate + λ · return days in the next
   window - 1 days; decisions whose window runs past the log's end are dropped), ``"session"``
   through ``rl.feedback.offline_steps.write_offline_steps`` (the per-decision listen reward);
2. offline PPO on RLlib (``rl.training.lifecycle.train_and_register``), one registry version
   per arm in ``<work>/registry``;
3. the version as a ``PolicyScorer`` arm "ppo-<reward>", plus diagnostics: the policy's
   entropy on the logged decisions, how often its argmax is the logging policy's likeliest
   pick, and the effective sample size of its importance weights against the log.

Both arms read the same log, model and hyper-parameters, so a difference between them is
the reward's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rl.config_checks import require_at_least
from rl.decision.policies import DecisionPolicy
from rl.experiments.ab_test import World
from rl.longterm.return_reward import LongTermRewardConfig, write_long_term_offline_steps
from rl.training.config import TrainConfig

PPO_REWARDS = ("return-days", "session")
"""The reward of each PPO arm: the paper's return days (immediate + λ · return days) or the
blog's per-decision session reward; arm name "ppo-<reward>"."""


@dataclass(frozen=True)
class PPOArmsConfig:
    """Which PPO arms to train on the history log, and how."""

    rewards: tuple[str, ...] = ("return-days",)
    """Rewards to train an arm on, each in PPO_REWARDS; arm name "ppo-<reward>"."""
    long_term: LongTermRewardConfig = field(default_factory=LongTermRewardConfig)
    """The long-term reward; its window is set from the A/B test's horizon by the caller."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(iterations=10))
    """Offline PPO hyper-parameters (algo must be offline-ppo)."""
    partitions: int = 4
    """Ray Data shuffle partitions of the session grouping (small logs: few). >= 1."""

    def __post_init__(self) -> None:
        if not self.rewards or any(r not in PPO_REWARDS for r in self.rewards):
            raise ValueError(
                f"rewards must be a non-empty subset of {PPO_REWARDS}, got {self.rewards}"
            )
        if self.train.algo != "offline-ppo":
            raise ValueError(f"PPO arms train offline-ppo, got algo {self.train.algo!r}")
        require_at_least(self, 1, "partitions")


def write_arm_steps(world: World, reward: str, out_uri: str, config: PPOArmsConfig) -> dict:
    """The history log as offline steps under ``reward``; returns what was written."""
    from rl.feedback.offline_steps import write_offline_steps

    corpus = world.simulator.corpus
    track_ids = [str(t) for t in corpus.track_ids]
    if reward == "return-days":
        summary = write_long_term_offline_steps(
            world.log_uri, out_uri, corpus.latents, track_ids, world.layout,
            config.long_term, num_partitions=config.partitions,
            end_day=world.simulator.day,
        )  # fmt: skip
        return summary.to_dict()
    rows = write_offline_steps(
        world.log_uri, out_uri, corpus.latents, track_ids, world.layout,
        reward_config=config.long_term.immediate, num_partitions=config.partitions,
    )  # fmt: skip
    return {"steps": rows}


def policy_diagnostics(policy: DecisionPolicy, steps_files: list[str], layout) -> dict[str, float]:
    """What the policy learned, on the logged decisions it was trained on: its entropy
    (nats; ln k is uniform), how often its argmax is the logged action, and the effective
    sample size (Σw)²/Σw² of the importance weights w = π(a|s) / π_b(a|s)."""
    from rl.evaluation.ope import effective_sample_size
    from rl.feedback.offline_steps_files import read_logged_decisions

    logged = read_logged_decisions(steps_files, layout)
    probabilities = policy.action_probabilities(logged.obs)
    rows = np.arange(len(logged.actions))
    p = np.clip(probabilities, 0.0, 1.0)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
    n_candidates = (np.asarray(layout.split(logged.obs)["candidate_mask"]) > 0).sum(axis=1)
    weights = probabilities[rows, logged.actions] / np.exp(logged.behaviour_logp)
    return {
        "decisions": float(len(rows)),
        "mean_entropy": float(entropy.mean()),
        "uniform_entropy": float(np.log(np.maximum(n_candidates, 1)).mean()),
        "mean_max_probability": float(probabilities.max(axis=1).mean()),
        "argmax_is_logged_action": float((probabilities.argmax(axis=1) == logged.actions).mean()),
        "effective_sample_size": float(effective_sample_size(weights)),
        "mean_reward": float(logged.rewards.mean()),
    }


def train_ppo_arms(
    world: World,
    work_uri: str,
    config: PPOArmsConfig,
    log: Callable[[str], None] = print,
    on_iteration: Callable[[Any], None] | None = None,
) -> tuple[dict[str, DecisionPolicy], dict[str, dict[str, Any]]]:
    """Train one offline-PPO arm per reward on the world's history; (arms, diagnostics)."""
    from rl import storage
    from rl.feedback.offline_steps_files import parquet_files
    from rl.registry import ModelRegistry, PolicyScorer
    from rl.training.lifecycle import train_and_register

    registry = ModelRegistry(storage.join(work_uri, "registry"))
    arms: dict[str, DecisionPolicy] = {}
    diagnostics: dict[str, dict[str, Any]] = {}
    for reward in config.rewards:
        steps_uri = storage.join(work_uri, f"steps-{reward}")
        written = write_arm_steps(world, reward, steps_uri, config)
        log(f"ppo-{reward}: offline steps {written}")
        files = parquet_files(steps_uri)
        version = train_and_register(
            config.train,
            files,
            world.layout,
            registry,
            work_uri=storage.join(work_uri, f"run-{reward}"),
            on_iteration=on_iteration,
        )
        policy = PolicyScorer.from_registry(registry, version.version)
        arms[f"ppo-{reward}"] = policy
        diagnostics[f"ppo-{reward}"] = {
            "version": version.version,
            "steps": written,
            "final_metrics": version.metrics,
            **policy_diagnostics(policy, files, world.layout),
        }
        log(f"ppo-{reward}: {diagnostics[f'ppo-{reward}']}")
    return arms, diagnostics
