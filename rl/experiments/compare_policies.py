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
the markdown and the plot in rl/experiments/comparison_report.py, the log-to-steps
conversion in rl/training/feature_steps.py.

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
from typing import TYPE_CHECKING, Any

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
from rl.feedback.offline_steps_files import read_logged_decisions
from rl.longterm.song_table import FEATURE_NAMES, SongFeatureTable, SongTableConfig
from rl.registry import ModelRegistry, PolicyScorer
from rl.training.config import TrainConfig
from rl.training.feature_steps import _return_days_column, write_feature_steps  # noqa: F401

if TYPE_CHECKING:
    from rl.simulator.corpus import Corpus
    from rl.simulator.real_catalog import BuiltSimulator
    from rl.simulator.simulation import Simulator


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


@dataclass
class _LoggingWorld:
    """The calibrated world and the policy that writes the logs, for the chosen pool."""

    built: BuiltSimulator
    base_layout: ObservationLayout
    logging_policy: DecisionPolicy
    log_simulator: Simulator
    pool: CandidatePoolConfig
    todays_pool: bool

    @classmethod
    def build(cls, settings: CompareSettings) -> _LoggingWorld:
        from rl.simulator.real_catalog import build_simulator
        from rl.simulator.simulation import Simulator

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
        return cls(built, base_layout, logging_policy, log_simulator, pool, todays_pool)

    @property
    def corpus(self) -> Corpus:
        return self.built.corpus

    def pool_for(self, table: SongFeatureTable | None = None):
        if self.todays_pool:
            return None  # the simulator's own kNN lookup
        from rl.simulator.recommender import SimulatorCandidatePool

        return SimulatorCandidatePool(self.pool, self.corpus, table, self.base_layout.betas)

    def simulator(
        self, users: int, policy: Any, layout: ObservationLayout, seed: int, **kw: Any
    ) -> Simulator:
        from rl.simulator.simulation import Simulator

        config = self.built.simulator.config
        return Simulator(self.corpus, users, policy, layout, config=config, seed=seed, **kw)


def run_comparison(
    settings: CompareSettings, out_uri: str, progress: Callable[[str], None] = print
) -> ComparisonReport:
    """The whole comparison; needs a running Ray (the CLI starts a local one)."""
    from rl.longterm.song_table import fit_song_table, table_summary
    from rl.songs.embedding import ensure_song_embedding

    embedding = ensure_song_embedding()
    world = _LoggingWorld.build(settings)
    corpus, base_layout = world.corpus, world.base_layout
    log_uri, heldout_uri = storage.join(out_uri, "log"), storage.join(out_uri, "heldout_log")
    progress(
        f"simulating the log: {settings.users} users x {settings.days} days, "
        f"pool {world.pool.spec()}"
    )
    n_logged = _simulate_log(world.log_simulator, base_layout, settings.days, log_uri)
    heldout = world.simulator(
        settings.heldout_users, world.logging_policy, base_layout, settings.seed + 7,
        candidate_pool=world.pool_for(),
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
    trained, training = _train_arms(settings, steps, layout, table, out_uri, progress)

    progress("refitting the myopic listen model and the personalised Q-model on the log")
    policies: dict[str, DecisionPolicy] = {
        LOGGING_ARM: world.logging_policy,
        MYOPIC_ARM: refit_myopic_greedy(log_uri, embedding, layout, corpus),
        "q-personalised": fit_q_personalised(log_uri, corpus, layout, table.horizon_days),
    }
    logged = read_logged_decisions(heldout_files, layout)
    design, ope = _serve_design_and_estimate(settings, policies, trained, logged, layout, progress)
    comparison = _run_arms_in_simulator(settings, world, policies, layout, table, progress)
    comparison["ope_dr_reward_per_decision"] = {
        name: {"mean": e.value, "ci": [e.ci_low, e.ci_high]} for name, e in ope.items()
    }
    comparison["settings"] = {
        "users": settings.users, "days": settings.days, "heldout_users": settings.heldout_users,
        "eval_users": settings.eval_users, "eval_days": settings.eval_days, "seed": settings.seed,
        "epsilon": settings.epsilon, "return_weight": settings.return_weight,
        "actor_critic_design": design, "train": settings.train.to_dict(),
        "pool": world.pool.to_dict(),
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


def _train_arms(
    settings: CompareSettings,
    steps: dict[str, list[str]],
    layout: ObservationLayout,
    table: SongFeatureTable,
    out_uri: str,
    progress: Callable[[str], None],
) -> tuple[dict[str, PolicyScorer], dict[str, dict[str, float]]]:
    """Offline PPO of both value designs, BC and MARWIL, each registered with the table;
    returns the greedy scorers and each run's last-iteration figures."""
    from rl.training.lifecycle import register_run
    from rl.training.train import train

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
    return trained, training


def _serve_design_and_estimate(
    settings: CompareSettings,
    policies: dict[str, DecisionPolicy],
    trained: dict[str, PolicyScorer],
    logged: Any,
    layout: ObservationLayout,
    progress: Callable[[str], None],
) -> tuple[str, dict[str, OPEEstimate]]:
    """Pick the served value design (held-out DR when "auto"), add the served actor-critic
    and the trained arms to ``policies``, and estimate every arm by DR on the held-out log."""

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
    return design, {name: dr(policy) for name, policy in policies.items()}


def _run_arms_in_simulator(
    settings: CompareSettings,
    world: _LoggingWorld,
    policies: dict[str, DecisionPolicy],
    layout: ObservationLayout,
    table: SongFeatureTable,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Every arm on the same new users for ``eval_days``: the paired comparison."""
    progress(
        f"running {len(policies)} arms on the same {settings.eval_users} new users "
        f"for {settings.eval_days} days"
    )
    aligned = table.aligned(world.corpus.track_ids)

    def make_simulator(policy):
        return world.simulator(
            settings.eval_users, policy, layout, settings.seed + 1000,
            song_features=aligned, candidate_pool=world.pool_for(aligned),
        )  # fmt: skip

    def on_arm(arm: str, totals: dict[str, np.ndarray]) -> None:
        rpd = totals["reward"].sum() / max(totals["decisions"].sum(), 1)
        progress(
            f"  {arm}: reward/decision {rpd:.3f}, minutes/user {totals['minutes'].mean():.1f}, "
            f"active days/user {totals['active_days'].mean():.2f}"
        )

    return paired_comparison(
        policies, make_simulator, settings.eval_days, seed=settings.seed,
        n_bootstrap=settings.bootstrap, baselines=(LOGGING_ARM, MYOPIC_ARM), on_arm=on_arm,
    )  # fmt: skip
