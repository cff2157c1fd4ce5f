"""``encore compare-policies``: the issue's end-to-end comparison, in one reproducible run.

Where it sits: it chains the whole offline pipeline on a fresh simulated world --
simulate a log under the myopic logging policy (rl/simulator) -> convert it to RLlib
offline steps with Ray Data (rl/feedback/offline_steps.py) -> train offline PPO, MARWIL and BC on
RLlib (train.py) and register them -> off-policy estimates on a held-out log (rl/evaluation/ope.py)
-> every policy run on the *same* simulated population of new users
(sim_compare.compare_paired_in_simulator), differences to the logging policy with paired
95% bootstrap intervals -> markdown + PNG.

A greedy version of the logging policy's own listen model ("myopic greedy") runs as a
reference arm: it is what a myopic ranker gains from exploiting instead of exploring.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace

from rl import storage
from rl.decision.policies import DecisionPolicy
from rl.evaluation.in_simulator import (
    LOGGING_ARM,
    Interval,
    PairedOutcome,
    compare_paired_in_simulator,
    difference_cell,
)
from rl.evaluation.ope import OPEEstimate, estimate_cell, evaluate_policy_offline
from rl.feedback.offline_steps_files import parquet_files, read_logged_decisions
from rl.registry import ModelRegistry, PolicyScorer
from rl.training.config import ALGORITHMS, TrainConfig


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
    train: TrainConfig = TrainConfig(iterations=30, train_batch_size=1024)

    def __post_init__(self) -> None:
        for name in ("users", "days", "heldout_users", "eval_users", "eval_days", "bootstrap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _simulate_log(simulator, layout, days: int, log_uri: str) -> int:
    from rl.feedback.log import FeedbackLogWriter

    with FeedbackLogWriter(log_uri, k=layout.k, n_betas=layout.n_betas, background=True) as w:
        summary = simulator.run(days, writer=w)
    return summary.decisions


def _to_steps(log_uri: str, steps_uri: str, embedding, layout) -> list[str]:
    from rl.feedback.offline_steps import write_offline_steps

    write_offline_steps(
        log_uri,
        steps_uri,
        embedding.latents,
        [str(t) for t in embedding.track_ids],
        layout,
        num_partitions=4,
    )
    return parquet_files(steps_uri)


@dataclass
class ComparisonReport:
    outcomes: list[PairedOutcome]
    ope: dict[str, OPEEstimate]
    training: dict[str, dict[str, float]]
    markdown: str
    markdown_uri: str
    plot_uri: str


def run_comparison(
    settings: CompareSettings, out_uri: str, progress: Callable[[str], None] = print
) -> ComparisonReport:
    """The whole comparison; needs a running Ray (the CLI starts a local one)."""
    from rl.simulator.real_catalog import build_simulator, default_logging_policy
    from rl.simulator.simulation import Simulator
    from rl.songs.embedding import ensure_song_embedding
    from rl.training.lifecycle import register_run
    from rl.training.train import train

    embedding = ensure_song_embedding()
    built = build_simulator(settings.users, seed=settings.seed)
    layout, corpus = built.layout, built.corpus
    progress(f"simulating the log: {settings.users} users x {settings.days} days")
    n_logged = _simulate_log(built.simulator, layout, settings.days, storage.join(out_uri, "log"))
    heldout = Simulator(
        corpus,
        settings.heldout_users,
        built.policy,
        layout,
        config=built.simulator.config,  # the same calibrated world, other users
        seed=settings.seed + 7,
    )
    _simulate_log(heldout, layout, settings.days, storage.join(out_uri, "heldout_log"))
    progress(f"converting {n_logged:,} logged decisions with Ray Data")
    files = _to_steps(
        storage.join(out_uri, "log"), storage.join(out_uri, "steps"), embedding, layout
    )
    heldout_files = _to_steps(
        storage.join(out_uri, "heldout_log"),
        storage.join(out_uri, "heldout_steps"),
        embedding,
        layout,
    )
    registry = ModelRegistry(storage.join(out_uri, "registry"))
    policies: dict[str, DecisionPolicy] = {LOGGING_ARM: built.policy}
    policies["myopic greedy (reference)"] = default_logging_policy(
        layout, corpus, temperature=1e-3, epsilon=0.0
    )
    training: dict[str, dict[str, float]] = {}
    for algo in ALGORITHMS:
        config = replace(settings.train, algo=algo, seed=settings.seed)
        progress(f"training {algo} ({config.iterations} iterations)")
        run = train(config, files, layout, storage.join(out_uri, "runs", algo))
        entry = register_run(registry, run, config, files, layout)
        training[algo] = run.final_metrics()
        module = registry.load_module(entry.version)
        policies[f"{algo} (greedy)"] = PolicyScorer(module, algo, greedy=True)
        if algo == "offline-ppo":
            policies[f"{algo} (sampled)"] = PolicyScorer(module, algo)
    logged = read_logged_decisions(heldout_files, layout)
    ope = {}
    for name, policy in policies.items():
        estimates = evaluate_policy_offline(
            policy.action_probabilities(logged.obs),
            logged.obs,
            logged.actions,
            logged.behaviour_logp,
            logged.rewards,
            layout,
            n_bootstrap=settings.bootstrap,
            seed=settings.seed,
        )
        ope[name] = next(e for e in estimates if e.estimator == "DR")
    progress(
        f"running {len(policies)} arms on the same {settings.eval_users} new users "
        f"for {settings.eval_days} days"
    )

    def make_simulator(policy):
        return Simulator(
            corpus,
            settings.eval_users,
            policy,
            layout,
            config=built.simulator.config,
            seed=settings.seed + 1000,
        )

    outcomes = compare_paired_in_simulator(
        policies,
        make_simulator,
        settings.eval_days,
        seed=settings.seed,
        n_bootstrap=settings.bootstrap,
        on_arm=lambda arm: progress(f"  simulated arm {arm}"),
    )
    markdown = comparison_markdown(settings, n_logged, len(logged.rewards), outcomes, ope, training)
    markdown_uri = storage.join(out_uri, "comparison.md")
    plot_uri = storage.join(out_uri, "comparison.png")
    storage.write_bytes(markdown_uri, markdown.encode("utf-8"))
    storage.write_bytes(plot_uri, comparison_plot(outcomes))
    return ComparisonReport(outcomes, ope, training, markdown, markdown_uri, plot_uri)


def comparison_markdown(settings, n_logged, n_heldout, outcomes, ope, training) -> str:
    t = settings.train
    lines = [
        "# Offline PPO vs the logging policy, MARWIL and BC",
        "",
        f"Log: {settings.users} users x {settings.days} days under the logging policy "
        f"({n_logged:,} decisions); held-out log: {settings.heldout_users} other users "
        f"({n_heldout:,} decisions). Training: {t.iterations} iterations x "
        f"{t.updates_per_iteration} updates x batch {t.train_batch_size}, clip {t.clip}, "
        f"gamma {t.gamma}, lambda {t.lambda_}, seed {settings.seed}.",
        "",
        f"Simulator: every arm runs on the same {settings.eval_users} new users for "
        f"{settings.eval_days} days (paired design); 95% user-level bootstrap intervals, "
        "the same resampled users in both arms of a difference. `*` = the interval of the "
        "difference excludes zero. OPE (DR) = doubly-robust estimate of reward per decision "
        "on the held-out log.",
        "",
        "| arm | decisions | reward/decision | vs logging | OPE (DR) | "
        f"reward/user ({settings.eval_days} d) | vs logging | active days/user | streams/user |",
        "|---|---:|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        ope_text = estimate_cell(ope.get(o.arm))
        lines.append(
            f"| {o.arm} | {o.decisions:,} | {o.reward_per_decision} | "
            f"{difference_cell(o.reward_per_decision_vs_logging)} | {ope_text} | {o.reward_per_user} | "
            f"{difference_cell(o.reward_per_user_vs_logging)} | {o.active_days_per_user} | "
            f"{o.streams_per_user} |"
        )
    lines += ["", "Training (last iteration):", ""]
    for algo, m in training.items():
        keys = [
            k
            for k in (
                "final_policy_loss",
                "final_vf_loss",
                "final_entropy",
                "final_mean_ratio",
                "final_clip_fraction",
            )
            if k in m
        ]
        lines.append(
            f"- {algo}: "
            + ", ".join(f"{k[6:]} {m[k]:.4f}" for k in keys)
            + f", {m['samples_per_s']:,.0f} samples/s, {m['train_seconds']:.0f} s"
        )
    return "\n".join(lines) + "\n"


def comparison_plot(outcomes: list[PairedOutcome]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Every arm but the logging one has both differences (compare_paired_in_simulator).
    diffs: list[tuple[str, Interval, Interval]] = [
        (o.arm, o.reward_per_decision_vs_logging, o.reward_per_user_vs_logging)
        for o in outcomes
        if o.reward_per_decision_vs_logging is not None and o.reward_per_user_vs_logging is not None
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, values, title in (
        (axes[0], [d[1] for d in diffs], "reward per decision minus logging"),
        (axes[1], [d[2] for d in diffs], "reward per user minus logging"),
    ):
        ax.errorbar(
            range(len(values)),
            [v.value for v in values],
            yerr=[[v.value - v.low for v in values], [v.high - v.value for v in values]],
            fmt="o",
            capsize=4,
        )
        ax.axhline(0.0, color="grey", lw=1)
        ax.set_xticks(
            range(len(values)), [d[0] for d in diffs], rotation=30, ha="right", fontsize=8
        )
        ax.set_title(f"Simulator (paired): {title}, 95% CI", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()
