"""Scorer deployment: observations -> policy probabilities, value, and the pick.

Where it sits: last hop of a recommendation. A thin shell over ``ScoringCore``
(services/core/scoring.py): it serves the logging policy (rl/decision/policies.py) until the registry has a
production version, then the trained actor-critic (rl/registry.py ``PolicyScorer``).

Hot-swap without restarts: a watcher thread in every replica polls the registry's
production pointer (``encore promote VERSION`` moves it); a new version is loaded and probed
off the request path and swapped in with one assignment, so requests never wait and never
see a half-loaded model. ``serve deploy`` with a changed ``user_config`` calls
``reconfigure`` (pin a version, change the poll interval) without restarting replicas.

A/B arms (``ServiceConfig.ab_arms``; the ingress assigns them by user hash and sends each
row's arm): ``production``, ``logging``, the stickiness Q-scorers ``q-<variant>`` fitted on
``longterm_log_uri`` at startup (services/core/longterm_arms.py), and ``blend``, which mixes
whatever production serves at that moment with one Q-scorer (services/core/scoring.py).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from ray import serve

from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy, latent_scale_of
from services.config import ServiceConfig, batching_deployment
from services.core.batch_wait import LoneRequestWait
from services.core.scoring import (
    LOGGING_VERSION,
    ArmAssignment,
    BlendArm,
    PolicySlot,
    ScoredBatch,
    ScoringCore,
    ServingPolicy,
    check_policy,
)
from services.metrics import VersionGauge

SCORER_BATCH_WAIT_S = 0.001
"""How long a Scorer batch waits for other ingress batches to merge with (under load)."""

Payload = tuple[np.ndarray, list[str], list[str]]
"""(B, size) observations, B modes ("explore" | "greedy" | "sample"), B arms."""


def build_scoring_core(
    config: ServiceConfig, latents: np.ndarray, track_ids: np.ndarray
) -> ScoringCore:
    """Logging-policy fallback, the registry slot, and any long-term and blend arms."""
    layout = config.layout
    logging_policy = MyopicListenPolicy(ListenProbabilityModel(layout, latent_scale_of(latents)))
    slot = PolicySlot(layout, ServingPolicy(logging_policy, LOGGING_VERSION), config.registry_uri)
    extra: dict[str, ServingPolicy] = {}
    blends: dict[str, BlendArm] = {}
    if config.longterm_log_uri:
        from services.core.longterm_arms import build_longterm_arms

        wants_blend = "blend" in config.ab_arms
        variants = [*config.longterm_variants, *([config.blend_variant] if wants_blend else [])]
        fitted = build_longterm_arms(
            config.longterm_log_uri,
            track_ids,
            latents,
            layout,
            variants,
            temperature=config.longterm_temperature,
            model_config=config.longterm_model,
            engine=config.longterm_engine,
        )
        extra = {f"q-{v}": fitted[f"q-{v}"] for v in config.longterm_variants}
        if wants_blend:
            blends["blend"] = BlendArm(fitted[f"q-{config.blend_variant}"], config.blend_weight)
    ArmAssignment(config.ab_arms)  # validated here too: a bad split fails at startup
    core = ScoringCore(
        slot, extra, seed=config.seed, blend_arms=blends, epsilon=config.exploration_epsilon
    )
    for arm in blends:
        check_policy(core.policy_for(arm).policy, layout)
    return core


def split_scored(scored: ScoredBatch, sizes: list[int]) -> list[ScoredBatch]:
    out, start = [], 0
    for size in sizes:
        rows = slice(start, start + size)
        out.append(
            ScoredBatch(
                scored.probabilities[rows],
                scored.values[rows],
                scored.chosen[rows],
                scored.logp[rows],
                scored.versions[rows],
                scored.policies[rows],
            )
        )
        start += size
    return out


@serve.deployment(**batching_deployment(num_cpus=0.3))
class Scorer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = ServiceConfig.from_args(config)
        embedding = self.config.song_embedding()
        self.core = build_scoring_core(self.config, embedding.latents, embedding.track_ids)
        # Import the trained module's code now (RLlib takes seconds to import): a later
        # hot-swap then only reads weights, and never slows requests with a cold import.
        import rl.training.module  # noqa: F401

        self.poll_interval_s = self.config.poll_interval_s
        self.core.slot.sync()  # serve production from the first request when it exists
        self.version_gauge = VersionGauge()
        self.version_gauge.show(self.core.slot.active.version)
        self._batch_wait = LoneRequestWait(SCORER_BATCH_WAIT_S, self.config.skip_lone_batch_wait)
        self._open_calls = 0
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="registry-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self.core.slot.sync()
            self.version_gauge.show(self.core.slot.active.version)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``user_config``: {"pinned_version": str | null, "poll_interval_s": float}."""
        self.core.slot.pinned_version = user_config.get("pinned_version") or None
        self.poll_interval_s = float(user_config.get("poll_interval_s", self.poll_interval_s))
        threading.Thread(target=self.core.slot.sync, daemon=True).start()

    async def score(self, payload: Payload) -> ScoredBatch:
        """One ingress batch; concurrent ones are merged into one policy call, except a
        lone one, which skips the batch wait (services/core/batch_wait.py)."""
        self._open_calls += 1
        try:
            wait_s = self._batch_wait.wait_for(self._open_calls)
            self._score_batch.set_batch_wait_timeout_s(wait_s)  # type: ignore[attr-defined]
            return await self._score_batch(payload)
        finally:
            self._open_calls -= 1

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=SCORER_BATCH_WAIT_S)
    async def _score_batch(self, payloads: list[Payload]) -> list[ScoredBatch]:
        self._batch_wait.observe(len(payloads))
        obs = np.concatenate([p[0] for p in payloads], axis=0)
        modes = [m for p in payloads for m in p[1]]
        arms = [a for p in payloads for a in p[2]]
        return split_scored(self.core.score(obs, modes, arms), [len(p[0]) for p in payloads])

    def describe(self) -> dict[str, Any]:
        slot = self.core.slot
        return {
            "replica": serve.get_replica_context().replica_tag,
            "version": slot.active.version,
            "policy": slot.active.name,
            "loaded_at": slot.active.loaded_at,
            "pinned_version": slot.pinned_version,
            "arms": self.core.arms,
            "refusals": list(slot.refusals),
        }

    def __del__(self) -> None:
        self._stop.set()
