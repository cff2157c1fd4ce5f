"""The report of ``encore compare-policies``: ``comparison.md`` (one table row per arm, paired
differences with 95% intervals, the held-out DR estimate, training figures) and
``comparison.png`` (each arm minus myopic-greedy). rl/experiments/compare_policies.py
writes both.
"""

from __future__ import annotations

from typing import Any

from rl.evaluation.in_simulator import METRICS
from rl.evaluation.ope import estimate_cell
from rl.experiments.comparison_arms import MYOPIC_ARM
from rl.figures import png_bytes, subplots


def _cell(value: dict[str, Any], digits: int = 3) -> str:
    low, high = value["ci"]
    star = " *" if low > 0 or high < 0 else ""
    return f"{value['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]{star}"


def comparison_markdown(settings, n_logged, n_heldout, comparison, ope, training, design) -> str:
    t = settings.train
    lines = [
        "# The actor-critic with learned song features vs the myopic and Q-score arms",
        "",
        f"Log: {settings.users} users x {settings.days} days under the logging policy "
        f"({n_logged:,} decisions); held-out log: {settings.heldout_users} other users "
        f"({n_heldout:,} decisions). Song table fitted on the log "
        f"({comparison['settings']['song_table']}). Training: {t.iterations} iterations x "
        f"{t.updates_per_iteration} updates x batch {t.train_batch_size}, lr {t.lr}, clip {t.clip}, "
        f"entropy {t.entropy_coeff}, gamma {t.gamma}, lambda {t.lambda_}, seed {settings.seed}. "
        f"actor-critic = ppo-{design} greedy with epsilon {settings.epsilon}; return weight "
        f"{settings.return_weight}.",
        "",
        f"Simulator: every arm runs on the same {settings.eval_users} new users for "
        f"{settings.eval_days} days (paired); 95% user-level bootstrap intervals, `*` = the "
        "interval excludes zero. OPE (DR) = doubly-robust reward per decision on the held-out log.",
        "",
        "| arm | reward/decision | vs logging | vs myopic-greedy | OPE (DR) | "
        f"minutes/user ({settings.eval_days} d) | vs logging | vs myopic-greedy | "
        "active days/user | vs myopic-greedy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, metrics in comparison["arms"].items():
        diffs = comparison["differences"].get(arm, {})

        def diff(base: str, metric: str, digits: int = 3, diffs: dict = diffs) -> str:
            d = diffs.get(f"vs_{base}")
            return _cell(d[metric], digits) if d else "-"

        lines.append(
            f"| {arm} | {_cell(metrics['reward_per_decision'])} | "
            f"{diff('logging', 'reward_per_decision')} | {diff(MYOPIC_ARM, 'reward_per_decision')} | "
            f"{estimate_cell(ope.get(arm))} | {_cell(metrics['minutes_60d'], 1)} | "
            f"{diff('logging', 'minutes_60d', 1)} | {diff(MYOPIC_ARM, 'minutes_60d', 1)} | "
            f"{_cell(metrics['active_days_60d'], 2)} | {diff(MYOPIC_ARM, 'active_days_60d', 2)} |"
        )
    lines += ["", "Training (last iteration):", ""]
    for arm, m in training.items():
        keys = [k for k in ("final_policy_loss", "final_vf_loss", "final_entropy") if k in m]
        lines.append(
            f"- {arm}: "
            + ", ".join(f"{k[6:]} {m[k]:.4f}" for k in keys)
            + f", {m['samples_per_s']:,.0f} samples/s, {m['train_seconds']:.0f} s"
        )
    return "\n".join(lines) + "\n"


def comparison_plot(comparison: dict[str, Any]) -> bytes:
    arms = [a for a in comparison["arms"] if f"vs_{MYOPIC_ARM}" in comparison["differences"][a]]
    fig, axes = subplots(1, len(METRICS), figsize=(14, 4.2))
    for ax, metric in zip(axes, METRICS, strict=True):
        cells = [comparison["differences"][a][f"vs_{MYOPIC_ARM}"][metric] for a in arms]
        means = [c["mean"] for c in cells]
        ax.errorbar(
            range(len(arms)),
            means,
            yerr=[[m - c["ci"][0] for m, c in zip(means, cells, strict=True)],
                  [c["ci"][1] - m for m, c in zip(means, cells, strict=True)]],
            fmt="o",
            capsize=4,
        )  # fmt: skip
        ax.axhline(0.0, color="grey", lw=1)
        ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{metric} minus myopic-greedy (paired, 95% CI)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    return png_bytes(fig)
