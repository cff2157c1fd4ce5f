"""Large populations as shards: one simulator per shard, one Ray task per shard.

Where it sits: ``encore simulate --shard-users N`` (and benchmarks/bench_simulator.py
--shards) split a population into shards of N users. Each shard is an independent
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
    peak_rss_mib: float  # of the process that ran the shard


def shard_sizes(n_users: int, shard_users: int) -> list[tuple[int, int]]:
    """[(first_user_id, users)] covering ``n_users`` in shards of at most ``shard_users``."""
    if n_users < 1 or shard_users < 1:
        raise ValueError(f"n_users and shard_users must be >= 1, got {n_users}, {shard_users}")
    return [(first, min(shard_users, n_users - first)) for first in range(0, n_users, shard_users)]


def simulate_shard(
    shard: int,
    first_user_id: int,
    n_users: int,
    days: int,
    corpus: Corpus,
    policy: DecisionPolicy,
    layout: ObservationLayout,
    config: SimulatorConfig,
    log_uri: str | None,
    seed: int,
) -> ShardResult:
    """Simulate one shard and write its log (when ``log_uri``); no Ray here."""
    from rl.feedback.log import FeedbackLogWriter
    from rl.simulator.simulation import Simulator

    started = time.perf_counter()
    simulator = Simulator(
        corpus, n_users, policy, layout, config=config,
        seed=seed + SHARD_SEED_STRIDE * shard, first_user_id=first_user_id,
    )  # fmt: skip
    written = organic = quarantined = 0
    if log_uri is None:
        summary = simulator.run(days)
    else:
        with FeedbackLogWriter(log_uri, k=layout.k, n_betas=layout.n_betas, background=True) as w:
            summary = simulator.run(days, writer=w)
        written, organic, quarantined = w.written_rows, w.written_organic_rows, w.quarantined_rows
    return ShardResult(
        shard=shard,
        first_user_id=first_user_id,
        users=n_users,
        summary=summary.to_dict(),
        written_rows=written,
        written_organic_rows=organic,
        quarantined_rows=quarantined,
        seconds=time.perf_counter() - started,
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
    """Every shard as a Ray task (1 CPU each, ``parallel`` CPUs for the local Ray)."""
    import ray

    from rl.cluster.ray_runtime import start_ray

    start_ray(num_cpus=parallel)
    remote = ray.remote(num_cpus=1, max_retries=0)(simulate_shard)
    corpus_ref, policy_ref = ray.put(corpus), ray.put(policy)
    pending = {
        remote.remote(
            shard, first, users, days, corpus_ref, policy_ref, layout, config, log_uri, seed
        ): shard
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
