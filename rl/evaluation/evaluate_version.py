"""``encore evaluate``: off-policy estimates of registered policies on held-out logs.

Where it sits: after training and before promotion. For the version under test (sampled
and greedy), the latest MARWIL and BC versions in the registry and the logging policy
itself (its on-policy mean reward), it computes IPS / SNIPS / DR with bootstrap 95%
intervals and the effective sample size (rl/evaluation/ope.py); optionally it runs the same policies
against the logging policy in the simulator (sim_compare.py) and puts the OPE and the
simulated values side by side; it writes a markdown report and a PNG with the intervals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rl import storage
from rl.config_checks import require_at_least
from rl.evaluation.in_simulator import (
    LOGGING_ARM,
    ArmOutcome,
    compare_in_simulator,
    difference_cell,
)
from rl.evaluation.ope import OPEEstimate, estimate_cell, evaluate_policy_offline
from rl.feedback.offline_steps_files import parquet_files, read_logged_decisions, resolve_layout
from rl.figures import png_bytes, subplots
from rl.registry import ModelRegistry, PolicyScorer, RegistryError


@dataclass(frozen=True)
class SimulatorCheck:
    """The optional online check of ``encore evaluate``: the version and its baselines run
    against the logging policy in the simulator, on the same simulated users."""

    users: int = 0
    """Also run the version and its baselines against the logging policy in the simulator
    with this many users (0 = off)."""
    days: int = 60
    """Simulated days. >= 1."""
    seed: int = 0
    """World seed: use the one the evaluated logs came from."""

    def __post_init__(self) -> None:
        require_at_least(self, 0, "users")
        require_at_least(self, 1, "days")


@dataclass(frozen=True)
class PolicyEstimates:
    policy: str
    estimates: list[OPEEstimate]


@dataclass(frozen=True)
class EvaluationReport:
    version: str
    rows: list[PolicyEstimates]
    simulated: list[ArmOutcome]
    markdown: str
    markdown_uri: str
    plot_uri: str


def _logging_policy_row(rewards: np.ndarray, n_bootstrap: int, seed: int) -> PolicyEstimates:
    """The logger's own value: the mean logged reward (all weights 1)."""
    rng = np.random.default_rng(seed)
    means = rewards[rng.integers(0, len(rewards), size=(n_bootstrap, len(rewards)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    est = OPEEstimate(
        "on-policy",
        float(rewards.mean()),
        float(low),
        float(high),
        float(len(rewards)),
        len(rewards),
    )
    return PolicyEstimates("logging policy", [est])


def _markdown(
    version: str, data_uri: str, n: int, rows: list[PolicyEstimates], overlap: bool
) -> str:
    lines = [
        f"# Off-policy evaluation of {version}",
        "",
        f"Held-out logs: `{data_uri}` ({n} decisions). Values are mean reward per decision, "
        "95% percentile-bootstrap intervals; ESS = effective sample size of the importance weights.",
        "",
    ]
    if overlap:
        lines += ["**Warning: these logs overlap the version's training data.**", ""]
    lines += ["| policy | estimator | value | 95% CI | ESS |", "|---|---|---:|---|---:|"]
    for row in rows:
        for e in row.estimates:
            lines.append(
                f"| {row.policy} | {e.estimator} | {e.value:.4f} | "
                f"[{e.ci_low:.4f}, {e.ci_high:.4f}] | {e.effective_sample_size:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def _simulation_markdown(
    outcomes: list[ArmOutcome], rows: list[PolicyEstimates], days: int, n_users: int
) -> str:
    dr_by_policy = {
        row.policy.replace(" (sampled)", ""): e
        for row in rows
        for e in row.estimates
        if e.estimator == "DR"
    }
    dr_by_policy[LOGGING_ARM] = next(
        e for row in rows if row.policy == "logging policy" for e in row.estimates
    )
    lines = [
        "",
        f"## Simulator: {n_users} users randomised over arms, {days} days",
        "",
        "Per arm: mean reward per decision and per-user outcomes over the window, 95% "
        "user-level bootstrap intervals; the OPE column is the held-out-log DR estimate "
        "(on-policy mean for the logging arm) of the same policy.",
        "",
        "| arm | users | decisions | reward/decision | vs logging | OPE (DR) | "
        f"reward/user ({days} d) | active days/user | streams/user |",
        "|---|---:|---:|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        ope_text = estimate_cell(dr_by_policy.get(o.arm))
        diff_text = difference_cell(o.reward_per_decision_vs_logging)
        lines.append(
            f"| {o.arm} | {o.users} | {o.decisions} | {o.reward_per_decision} | {diff_text} | "
            f"{ope_text} | {o.reward_per_user} | {o.active_days_per_user} | {o.streams_per_user} |"
        )
    lines += ["", "`*` = the 95% interval of the difference excludes zero."]
    return "\n".join(lines) + "\n"


def _plot(rows: list[PolicyEstimates], outcomes: list[ArmOutcome]) -> bytes:
    labels, values, lows, highs = [], [], [], []
    for row in rows:
        for e in row.estimates:
            labels.append(f"{row.policy}\n{e.estimator}")
            values.append(e.value)
            lows.append(e.value - e.ci_low)
            highs.append(e.ci_high - e.value)
    panels = 2 if outcomes else 1
    fig, axes = subplots(1, panels, figsize=(max(6, 0.9 * len(labels)) + 4 * (panels - 1), 4.5))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    ax.errorbar(range(len(values)), values, yerr=[lows, highs], fmt="o", capsize=4)
    ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("mean reward per decision")
    ax.set_title("Off-policy estimates (held-out logs), 95% CI", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if outcomes:
        ax = axes[1]
        sim = [o.reward_per_decision for o in outcomes]
        ax.errorbar(
            range(len(sim)),
            [i.value for i in sim],
            yerr=[[i.value - i.low for i in sim], [i.high - i.value for i in sim]],
            fmt="s",
            capsize=4,
            color="tab:green",
        )
        ax.set_xticks(
            range(len(sim)), [o.arm for o in outcomes], rotation=30, ha="right", fontsize=8
        )
        ax.set_title("Simulator: reward per decision, 95% CI", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    return png_bytes(fig)


def evaluate_version(
    registry: ModelRegistry,
    version: str | None,
    data_uri: str,
    out_uri: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    simulator: SimulatorCheck | None = None,
) -> EvaluationReport:
    """OPE table (+ the simulator comparison when ``simulator.users`` > 0) for ``version``."""
    simulator = simulator or SimulatorCheck()
    version = version or registry.production_version()
    if version is None:
        raise RegistryError(f"no version given and no production version in {registry.uri}")
    entry = registry.verify(version)
    # Held-out steps built without song features are read as such: a version with them
    # adds its own table's features (PolicyScorer), as the Scorer does when serving.
    layout = resolve_layout(data_uri, entry.observation_layout)
    if layout.without_song_features() != entry.observation_layout.without_song_features():
        raise ValueError(
            f"the data's layout {layout.to_dict()} differs from the version's {entry.layout}"
        )
    files = parquet_files(data_uri)
    logged = read_logged_decisions(files, layout)

    def estimates(probs: np.ndarray) -> list[OPEEstimate]:
        return evaluate_policy_offline(probs, logged, layout, n_bootstrap=n_bootstrap, seed=seed)

    scorer = PolicyScorer.from_registry(registry, version)
    probs = scorer.action_probabilities(logged.obs)
    greedy_scorer = PolicyScorer(
        scorer.module, scorer.name, greedy=True, song_features=scorer.song_features
    )
    greedy = greedy_scorer.action_probabilities(logged.obs)
    rows = [
        PolicyEstimates(f"{scorer.name} (sampled)", estimates(probs)),
        PolicyEstimates(f"{scorer.name} (greedy)", estimates(greedy)),
    ]
    policies = {scorer.name: scorer, greedy_scorer.name: greedy_scorer}
    for algo in ("marwil", "bc"):
        latest = [v for v in registry.list_versions() if v.algo == algo and v.version != version]
        if latest and latest[-1].observation_layout == entry.observation_layout:
            baseline = PolicyScorer.from_registry(registry, latest[-1].version)
            policies[baseline.name] = baseline
            rows.append(
                PolicyEstimates(
                    f"{baseline.name} (sampled)",
                    estimates(baseline.action_probabilities(logged.obs)),
                )
            )
    rows.append(_logging_policy_row(logged.rewards, n_bootstrap, seed))
    overlap = bool(set(files) & set(entry.data.get("seen_paths", entry.data.get("paths", []))))
    markdown = _markdown(version, data_uri, len(logged.rewards), rows, overlap)
    outcomes: list[ArmOutcome] = []
    if simulator.users > 0:
        outcomes = compare_in_simulator(
            policies,
            n_users=simulator.users,
            days=simulator.days,
            seed=simulator.seed,
            n_bootstrap=n_bootstrap,
        )
        markdown += _simulation_markdown(outcomes, rows, simulator.days, simulator.users)
    out_uri = out_uri or storage.join(
        registry.version_uri(version), "evaluations", time.strftime("%Y%m%d-%H%M%S")
    )
    markdown_uri = storage.join(out_uri, "ope.md")
    plot_uri = storage.join(out_uri, "ope.png")
    storage.write_bytes(markdown_uri, markdown.encode("utf-8"))
    storage.write_bytes(plot_uri, _plot(rows, outcomes))
    return EvaluationReport(version, rows, outcomes, markdown, markdown_uri, plot_uri)
