"""``encore compare-policies``: the issue's end-to-end comparison, in one reproducible run.

Where it sits: it chains the whole offline pipeline on a fresh simulated world --
simulate a log under the myopic logging policy (rl/simulator) -> fit the per-song feature
table from that log with Ray Data (rl/longterm/song_table.py) -> convert the log to RLlib
offline steps whose observations carry each candidate's song features
(rl/feedback/offline_steps.py) -> train the actor-critic with offline PPO, plus MARWIL and
BC, on RLlib (rl/training) and register them with the table -> off-policy estimates on a
held-out log (rl/evaluation/ope.py) -> every arm run on the *same* simulated population
of new users for ``eval_days`` -> ``comparison.json`` (the issue's shape), markdown, PNG.
The arms' keys and the two refitted baselines are in rl/experiments/comparison_arms.py,
the markdown and the plot in rl/experiments/comparison_report.py.

Arms (stable keys, ``ARM_KEYS``):

* ``logging``: the incumbent myopic policy that wrote the log (softmax, epsilon floor);
* ``myopic-greedy``: its listen model *refitted on the same log*, taken greedily;
* ``q-personalised``: the paper's clickiness x (1 + <u, v_i>) fitted on the same log,
  ranking the same kNN pool;
* ``actor-critic``: the served default -- the offline-PPO actor-critic of the winning
  value design, greedy with epsilon exploration (``EpsilonGreedyPolicy``);
* ``ppo-session`` / ``ppo-return-days``: the two value designs, greedy: the session reward
  with the song table as input only, and the paper's decomposition, reward + w x
  listened x <u, v_i> (listened is a draw of P(stream), so its expectation is
  P(stream) x expected return days);
* ``bc``, ``marwil``: RLlib's BC and MARWIL on the same observations, greedy.

``pool`` picks the candidate pool every phase uses (rl/decision/candidate_pool.py): today's
kNN-of-the-song pool of 4 by default, or a multi-source pool (the observation's k is the
pool's k). The world (skip-threshold calibration) is the same for every pool: it is
calibrated with the default pool. The logging phases have no song table yet, so a pool's
``popular``/``sticky`` slots are backfilled there; the evaluation fills them from the
table fitted on the log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rl import storage
from rl.config_checks import require_at_least, require_fraction
from rl.decision.candidate_pool import CandidatePoolConfig
from rl.decision.observation import ObservationLayout
from rl.decision.policies import DecisionPolicy, EpsilonGreedyPolicy
from rl.evaluation.in_simulator import LOGGING_ARM, paired_comparison
from rl.evaluation.ope import OPEEstimate, evaluate_policy_offline

# The arms and the report sit in comparison_arms.py and comparison_report.py; their names
# stay importable from here.
from rl.experiments.comparison_arms import (  # noqa: F401
    ACTOR_CRITIC_ARM,
    ARM_KEYS,
    MYOPIC_ARM,
    VALUE_DESIGNS,
    fit_q_personalised,
    refit_myopic_greedy,
)
from rl.experiments.comparison_report import (  # noqa: F401
    _cell,
    comparison_markdown,
    comparison_plot,
)
from rl.feedback.offline_steps_files import parquet_files, read_logged_decisions
from rl.longterm.song_table import FEATURE_NAMES, SongFeatureTable, SongTableConfig
from rl.registry import ModelRegistry, PolicyScorer
from rl.training.config import TrainConfig


@dataclass(frozen=True)
class CompareSettings:
    users: int = 3000
    """Simulated users whose log trains the policies."""
    days: int = 14
    """Days of logged decisions."""
    heldout_users: int = 1000
    """Users of the held-out log for the off-policy estimates."""
    eval_users: int = 3000
    """New users each arm is run on in the simulator (the same ones for every arm)."""
    eval_days: int = 60
    """Days each arm runs (the 60-day outcomes)."""
    seed: int = 0
    bootstrap: int = 1000
    epsilon: float = 0.05
    """Exploration of the served actor-critic: probability mass spread uniformly. [0, 1]."""
    return_weight: float = 1.0
    """w of the ``return-days`` design: reward per expected return day of a stream. >= 0."""
    default_design: str = "auto"
    """Value design served as ``actor-critic``: one of VALUE_DESIGNS, or "auto" = the one
    with the higher DR estimate of reward per decision on the held-out log (never the
    evaluation users)."""
    pool: str = "song=4"
    """Candidate pool as SOURCE=COUNT,... (sources: song, taste, relationship, popular,
    sticky; counts sum to k in 4..50), e.g. song=4,taste=2,relationship=2,popular=1,sticky=1.
    Default: today's pool, the 4 nearest songs of the song playing."""
    song_table: SongTableConfig = field(default_factory=SongTableConfig)
    train: TrainConfig = TrainConfig(
        iterations=30, train_batch_size=1024, lr=1e-3, entropy_coeff=0.0
    )

    def __post_init__(self) -> None:
        require_at_least(
            self, 1, "users", "days", "heldout_users", "eval_users", "eval_days", "bootstrap"
        )
        require_fraction(self, "epsilon")
        require_at_least(self, 0, "return_weight")
        if self.default_design not in (*VALUE_DESIGNS, "auto"):
            raise ValueError(
                f"default_design must be one of {VALUE_DESIGNS} or 'auto', got {self.default_design!r}"
            )
        self.pool_config()  # a malformed pool spec is refused here, before any work

    def pool_config(self) -> CandidatePoolConfig:
        return CandidatePoolConfig.from_spec(self.pool, seed=self.seed)


def _simulate_log(simulator, layout, days: int, log_uri: str) -> int:
    from rl.feedback.log import FeedbackLogWriter

    with FeedbackLogWriter(log_uri, k=layout.k, n_betas=layout.n_betas, background=True) as w:
        summary = simulator.run(days, writer=w)
    return summary.decisions


def _return_days_column(table: SongFeatureTable, weight: float):
    """Ray Data batch function: adds ``long_term_reward`` = w x listened x <[1, u], v_i>."""
    import pyarrow as pa

    from rl.feedback.offline_steps import EXTRA_REWARD_COLUMN

    def add(batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        taste = batch["user_taste"].combine_chunks().values.to_numpy().reshape(n, -1)
        chosen = batch["chosen_track_id"].to_numpy(zero_copy_only=False)[:, None]
        expected = table.candidate_features_by_id(chosen, taste)[:, 0, 2]
        listened = batch["listened"].to_numpy(zero_copy_only=False).astype(np.float32)
        return batch.append_column(
            EXTRA_REWARD_COLUMN, pa.array((weight * listened * expected).astype(np.float32))
        )

    return add


def write_feature_steps(
    log_uri: str,
    steps_uri: str,
    embedding,
    layout: ObservationLayout,
    table: SongFeatureTable | None,
    return_weight: float | None = None,
    days: list[int] | None = None,
) -> list[str]:
    """The log (optionally some days) as offline steps whose observations carry the song
    features (``table``; None for a layout without them); with ``return_weight`` the reward
    gets the paper's long-term term (``_return_days_column``)."""
    from rl.feedback.log import read_decisions
    from rl.feedback.offline_steps import decisions_to_offline_steps, write_steps

    decisions = read_decisions(log_uri, days)
    if return_weight is not None:
        if table is None:
            raise ValueError("the return-days reward needs the song table")
        decisions = decisions.map_batches(
            _return_days_column(table, return_weight), batch_format="pyarrow", batch_size=None
        )
    steps = decisions_to_offline_steps(
        decisions,
        embedding.latents,
        [str(t) for t in embedding.track_ids],
        layout,
        num_partitions=4,
        song_features=table,
    )
    write_steps(steps, steps_uri, layout)
    return parquet_files(steps_uri)


@dataclass
class ComparisonReport:
    comparison: dict[str, Any]
    ope: dict[str, OPEEstimate]
    training: dict[str, dict[str, float]]
    table_summary: dict[str, Any]
    design: str
    markdown: str
    markdown_uri: str
    json_uri: str
    plot_uri: str


def run_comparison(
    settings: CompareSettings, out_uri: str, progress: Callable[[str], None] = print
) -> ComparisonReport:
    """The whole comparison; needs a running Ray (the CLI starts a local one)."""
    from rl.longterm.song_table import fit_song_table, table_summary
    from rl.simulator.real_catalog import build_simulator
    from rl.simulator.simulation import Simulator
    from rl.songs.embedding import ensure_song_embedding
    from rl.training.lifecycle import register_run
    from rl.training.train import train

    embedding = ensure_song_embedding()
    built = build_simulator(settings.users, seed=settings.seed)
    base_layout, corpus, logging_policy = built.layout, built.corpus, built.policy
    pool = settings.pool_config()
    todays_pool = pool.is_song_knn_only and pool.k == base_layout.k
    log_simulator = built.simulator
    if not todays_pool:
        from rl.simulator.real_catalog import default_logging_policy
        from rl.simulator.recommender import SimulatorCandidatePool

        # The same calibrated world; the logging policy scores the pool's k candidates.
        base_layout = replace(base_layout, k=pool.k)
        logging_policy = default_logging_policy(base_layout, corpus)
        log_simulator = Simulator(
            corpus, settings.users, logging_policy, base_layout, config=built.simulator.config,
            seed=settings.seed + 1, candidate_pool=SimulatorCandidatePool(pool, corpus),
        )  # fmt: skip

    def pool_for(table: SongFeatureTable | None = None):
        if todays_pool:
            return None  # the simulator's own kNN lookup
        from rl.simulator.recommender import SimulatorCandidatePool

        return SimulatorCandidatePool(pool, corpus, table, base_layout.betas)

    log_uri, heldout_uri = storage.join(out_uri, "log"), storage.join(out_uri, "heldout_log")
    progress(
        f"simulating the log: {settings.users} users x {settings.days} days, pool {pool.spec()}"
    )
    n_logged = _simulate_log(log_simulator, base_layout, settings.days, log_uri)
    heldout = Simulator(
        corpus, settings.heldout_users, logging_policy, base_layout,
        config=built.simulator.config, seed=settings.seed + 7, candidate_pool=pool_for(),
    )  # fmt: skip
    _simulate_log(heldout, base_layout, settings.days, heldout_uri)

    progress(f"fitting the song table on {n_logged:,} logged decisions (Ray Data)")
    table = fit_song_table(log_uri, corpus.latents, corpus.track_ids, settings.song_table)
    summary = table_summary(table)
    progress(f"  {summary}")
    layout = replace(base_layout, song_feature_dim=len(FEATURE_NAMES))
    steps: dict[str, list[str]] = {}
    for design in VALUE_DESIGNS:
        weight = settings.return_weight if design == "return-days" else None
        steps[design] = write_feature_steps(
            log_uri, storage.join(out_uri, f"steps-{design}"), embedding, layout, table, weight
        )
    heldout_files = write_feature_steps(
        heldout_uri, storage.join(out_uri, "heldout_steps"), embedding, layout, table
    )

    registry = ModelRegistry(storage.join(out_uri, "registry"))
    trained: dict[str, PolicyScorer] = {}
    training: dict[str, dict[str, float]] = {}
    runs = [
        ("ppo-session", "offline-ppo", "session"),
        ("ppo-return-days", "offline-ppo", "return-days"),
    ]
    runs += [("bc", "bc", "session"), ("marwil", "marwil", "session")]
    for arm, algo, design in runs:
        config = replace(settings.train, algo=algo, seed=settings.seed)
        progress(f"training {arm} ({algo}, {config.iterations} iterations, {design} reward)")
        run = train(config, steps[design], layout, storage.join(out_uri, "runs", arm))
        entry = register_run(registry, run, config, steps[design], layout, song_table=table)
        training[arm] = run.final_metrics()
        trained[arm] = PolicyScorer(registry.load_module(entry.version), arm, greedy=True)
        trained[arm].name = arm

    progress("refitting the myopic listen model and the personalised Q-model on the log")
    policies: dict[str, DecisionPolicy] = {
        LOGGING_ARM: logging_policy,
        MYOPIC_ARM: refit_myopic_greedy(log_uri, embedding, layout, corpus),
        "q-personalised": fit_q_personalised(log_uri, corpus, layout, table.horizon_days),
    }
    logged = read_logged_decisions(heldout_files, layout)

    def dr(policy: DecisionPolicy) -> OPEEstimate:
        estimates = evaluate_policy_offline(
            policy.action_probabilities(logged.obs), logged, layout,
            n_bootstrap=settings.bootstrap, seed=settings.seed,
        )  # fmt: skip
        return next(e for e in estimates if e.estimator == "DR")

    design = settings.default_design
    if design == "auto":
        design_ope = {d: dr(trained[f"ppo-{d}"]).value for d in VALUE_DESIGNS}
        design = max(design_ope, key=lambda d: design_ope[d])
        progress(f"value design by held-out DR: {design_ope} -> {design}")
    policies[ACTOR_CRITIC_ARM] = EpsilonGreedyPolicy(
        trained[f"ppo-{design}"], settings.epsilon, name=ACTOR_CRITIC_ARM
    )
    policies.update(trained)
    ope = {name: dr(policy) for name, policy in policies.items()}

    progress(
        f"running {len(policies)} arms on the same {settings.eval_users} new users "
        f"for {settings.eval_days} days"
    )
    aligned = table.aligned(corpus.track_ids)

    def make_simulator(policy):
        return Simulator(
            corpus, settings.eval_users, policy, layout, config=built.simulator.config,
            seed=settings.seed + 1000, song_features=aligned, candidate_pool=pool_for(aligned),
        )  # fmt: skip

    def on_arm(arm: str, totals: dict[str, np.ndarray]) -> None:
        rpd = totals["reward"].sum() / max(totals["decisions"].sum(), 1)
        progress(
            f"  {arm}: reward/decision {rpd:.3f}, minutes/user {totals['minutes'].mean():.1f}, "
            f"active days/user {totals['active_days'].mean():.2f}"
        )

    comparison = paired_comparison(
        policies, make_simulator, settings.eval_days, seed=settings.seed,
        n_bootstrap=settings.bootstrap, baselines=(LOGGING_ARM, MYOPIC_ARM), on_arm=on_arm,
    )  # fmt: skip
    comparison["ope_dr_reward_per_decision"] = {
        name: {"mean": e.value, "ci": [e.ci_low, e.ci_high]} for name, e in ope.items()
    }
    comparison["settings"] = {
        "users": settings.users, "days": settings.days, "heldout_users": settings.heldout_users,
        "eval_users": settings.eval_users, "eval_days": settings.eval_days, "seed": settings.seed,
        "epsilon": settings.epsilon, "return_weight": settings.return_weight,
        "actor_critic_design": design, "train": settings.train.to_dict(),
        "pool": pool.to_dict(),
        "song_table": summary,
    }  # fmt: skip
    markdown = comparison_markdown(
        settings, n_logged, len(logged.rewards), comparison, ope, training, design
    )
    markdown_uri = storage.join(out_uri, "comparison.md")
    json_uri = storage.join(out_uri, "comparison.json")
    plot_uri = storage.join(out_uri, "comparison.png")
    storage.write_bytes(markdown_uri, markdown.encode("utf-8"))
    storage.write_bytes(json_uri, json.dumps(comparison, indent=1).encode("utf-8"))
    storage.write_bytes(plot_uri, comparison_plot(comparison))
    return ComparisonReport(
        comparison, ope, training, summary, design, markdown, markdown_uri, json_uri, plot_uri
    )
