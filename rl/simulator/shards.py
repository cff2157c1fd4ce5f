"""Large populations as shards: one simulator per shard, one Ray task per shard.

Where it sits: ``encore simulate --shard-users N`` (and benchmarks/bench_simulator.py
--shard-users) split a population into shards of N users. Each shard is an independent
``Simulator`` over the same world (corpus, config, policy), with its own seed, user ids
``u<first_user_id + row>`` disjoint from every other shard's (so are its session ids,
which start with the user id), and its own ``FeedbackLogWriter`` writing its own parquet
files (unique names) under the shared log URI. Users do not interact in the simulator,
so a sharded population is the same model as one big population (not the same random
draws).

``simulate_shard`` is the pure core (no Ray); ``simulate_sharded`` is the thin Ray shell:
one task per shard, at most ``parallel`` at a time (one per core), the corpus and policy
put in the object store once.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Any

from rl.decision.observation import ObservationLayout
from rl.decision.policies import DecisionPolicy
from rl.simulator.config import SimulatorConfig
from rl.simulator.corpus import Corpus

#: Seeds of shards are spaced so a shard's seed never equals another's.
SHARD_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class ShardedWorld:
    """What every shard shares: the days to run, the world (corpus, policy, layout,
    config), where the log goes (None: no log) and the base seed."""

    days: int
    corpus: Corpus
    policy: DecisionPolicy
    layout: ObservationLayout
    config: SimulatorConfig
    log_uri: str | None
    seed: int


@dataclass(frozen=True)
class ShardResult:
    """What one shard did."""

    shard: int
    first_user_id: int
    users: int
    summary: dict[str, Any]  # RunSummary.to_dict()
    written_rows: int
    written_organic_rows: int
    quarantined_rows: int
    seconds: float
    cpu_seconds: float  # user + system CPU of the shard's process while it ran the shard
    peak_rss_mib: float  # of the process that ran the shard (a reused worker: its peak so far)


def shard_sizes(n_users: int, shard_users: int) -> list[tuple[int, int]]:
    """[(first_user_id, users)] covering ``n_users`` in shards of at most ``shard_users``."""
    if n_users < 1 or shard_users < 1:
        raise ValueError(f"n_users and shard_users must be >= 1, got {n_users}, {shard_users}")
    return [(first, min(shard_users, n_users - first)) for first in range(0, n_users, shard_users)]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def simulate_shard(
    shard: int, first_user_id: int, n_users: int, world: ShardedWorld
) -> ShardResult:
    """Simulate one shard and write its log (when ``world.log_uri``); no Ray here."""
    from rl.feedback.log import FeedbackLogWriter
    from rl.simulator.simulation import Simulator

    started, cpu_started = time.perf_counter(), _cpu_seconds()
    simulator = Simulator(
        world.corpus, n_users, world.policy, world.layout, config=world.config,
        seed=world.seed + SHARD_SEED_STRIDE * shard, first_user_id=first_user_id,
    )  # fmt: skip
    written = organic = quarantined = 0
    if world.log_uri is None:
        summary = simulator.run(world.days)
    else:
        with FeedbackLogWriter(
            world.log_uri, k=world.layout.k, n_betas=world.layout.n_betas, background=True
        ) as writer:
            summary = simulator.run(world.days, writer=writer)
        written, organic = writer.written_rows, writer.written_organic_rows
        quarantined = writer.quarantined_rows
    return ShardResult(
        shard=shard,
        first_user_id=first_user_id,
        users=n_users,
        summary=summary.to_dict(),
        written_rows=written,
        written_organic_rows=organic,
        quarantined_rows=quarantined,
        seconds=time.perf_counter() - started,
        cpu_seconds=_cpu_seconds() - cpu_started,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    )


def simulate_sharded(
    n_users: int,
    shard_users: int,
    days: int,
    corpus: Corpus,
    policy: DecisionPolicy,
    layout: ObservationLayout,
    config: SimulatorConfig,
    log_uri: str | None,
    seed: int = 0,
    parallel: int = 2,
    on_shard: Any = None,
) -> list[ShardResult]:
    """Every shard as a Ray task (1 CPU each, ``parallel`` CPUs for the local Ray); the
    world (corpus and policy included) goes into the object store once."""
    import ray

    from rl.cluster.ray_runtime import start_ray

    start_ray(num_cpus=parallel)
    remote = ray.remote(num_cpus=1, max_retries=0)(simulate_shard)
    world = ray.put(ShardedWorld(days, corpus, policy, layout, config, log_uri, seed))
    pending = {
        remote.remote(shard, first, users, world): shard
        for shard, (first, users) in enumerate(shard_sizes(n_users, shard_users))
    }
    results: list[ShardResult] = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        result = ray.get(done[0])
        del pending[done[0]]
        results.append(result)
        if on_shard is not None:
            on_shard(result)
    return sorted(results, key=lambda result: result.shard)
