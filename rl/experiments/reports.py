"""Markdown reports (tables + PNG figures) of ``encore ab-test`` and ``encore data-efficiency``.

Where it sits: the last step of both commands; takes the per-user frames and tables of
``ab_test`` / ``ab_metrics`` / ``data_efficiency`` and writes ``report.md`` with its
figures into an output directory (local path).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pandas as pd

from rl.experiments import ab_metrics
from rl.experiments.data_efficiency import plot_study, standard_error_ratios

#: The paper's headline effects of the personalised arm over control on impacted users
#: (section 5.1.3, figure 6a) and of the shelf (5.1.4, figure 7a).
PAPER_BANNER_LIFTS = {
    "60-day minutes with the item": 0.81,
    "60-day active days with the item": 0.32,
}
PAPER_SHELF_LIFTS = {
    "week-8 minutes, all listening": 0.017,
    "minutes with discoveries (weeks 1-6)": 0.062,
    "users with a lasting discovery": 0.054,
}


def _markdown(frame: pd.DataFrame, floatfmt: str = ".3g") -> str:
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype.kind == "f":
            frame[column] = frame[column].map(lambda v: f"{v:{floatfmt}}")
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _pct(lift: float, low: float, high: float) -> str:
    return f"{100 * lift:+.1f}% [{100 * low:+.1f}, {100 * high:+.1f}]"


def _with_lift_ci(lifts: pd.DataFrame) -> pd.DataFrame:
    """``lifts`` with a "lift (95% CI)" column formatted by ``_pct``."""
    return lifts.assign(
        **{"lift (95% CI)": [_pct(r.lift, r.ci_low, r.ci_high) for r in lifts.itertuples()]}
    )


def headline_table(
    lifts: pd.DataFrame, paper: dict[str, float], arm: str = "personalised"
) -> pd.DataFrame:
    rows = lifts[lifts["arm"] == arm].set_index("metric")
    records = []
    for metric, paper_lift in paper.items():
        if metric in rows.index:
            row = rows.loc[metric]
            simulated = _pct(row["lift"], row["ci_low"], row["ci_high"])
        else:
            simulated = "n/a"
        records.append(
            {
                "metric": metric,
                "simulated (95% CI)": simulated,
                "paper": f"{100 * paper_lift:+.1f}%",
            }
        )
    return pd.DataFrame.from_records(records)


def policy_arm_table(banner: pd.DataFrame, diagnostics: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per policy arm (columns ``entropy_<arm>``): what it picks on the banner and, when it
    was trained on the history log, what it learned there (``ppo_arms.policy_diagnostics``)."""
    records = []
    for column in [c for c in banner.columns if c.startswith("entropy_")]:
        arm = column.removeprefix("entropy_")
        picks = banner[f"pick_{arm}"]
        found = diagnostics.get(arm, {})
        records.append(
            {
                "arm": arm,
                "banner entropy (nats)": float(banner[column].mean()),
                "pick = control's": float((picks == banner["pick_control"]).mean()),
                "pick = personalised's": float((picks == banner["pick_personalised"]).mean()),
                "log entropy (nats)": found.get("mean_entropy", float("nan")),
                "uniform entropy": found.get("uniform_entropy", float("nan")),
                "argmax = logged action": found.get("argmax_is_logged_action", float("nan")),
                "ESS / decisions": found.get("effective_sample_size", float("nan"))
                / found.get("decisions", float("nan")),
                "mean training reward": found.get("mean_reward", float("nan")),
            }
        )
    return pd.DataFrame.from_records(records)


def write_ab_report(
    results: dict[str, Any], out_dir: str, config: Any, n_resamples: int, seed: int
) -> str:
    """Write report.md, figures and the raw per-user frames; returns the report path."""
    os.makedirs(out_dir, exist_ok=True)
    banner: pd.DataFrame = results["banner"]
    banner.to_parquet(os.path.join(out_dir, "banner_users.parquet"))
    lines, lifts = _banner_section(
        banner, results["world"].models, out_dir, config, n_resamples, seed
    )
    diagnostics = results.get("policy_diagnostics") or {}
    arms_table = policy_arm_table(banner, diagnostics)
    lines += _policy_arms_section(arms_table, diagnostics)
    summary: dict[str, Any] = {
        "banner_lifts_impacted": lifts.to_dict(orient="records"),
        "impacted_share": float(banner["impacted"].mean()),
        "policy_arms": arms_table.to_dict(orient="records"),
        "policy_diagnostics": diagnostics,
    }
    shelf: pd.DataFrame | None = results["shelf"]
    if shelf is not None:
        shelf.to_parquet(os.path.join(out_dir, "shelf_users.parquet"))
        shelf_lines, shelf_lifts = _shelf_section(shelf, out_dir, config, n_resamples, seed)
        lines += shelf_lines
        summary["shelf_lifts"] = shelf_lifts.to_dict(orient="records")
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as handle:
        handle.write(_in_window_days("\n".join(lines), config.window_days))
    with open(os.path.join(out_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2, default=float)
    return path


def _in_window_days(text: str, window_days: int) -> str:
    """The metric names say "60-day" (the paper's window); name the test's own window."""
    if window_days == 60:
        return text
    return text.replace("60-day", f"{window_days}-day")


def _banner_section(
    banner: pd.DataFrame, models: Any, out_dir: str, config: Any, n_resamples: int, seed: int
) -> tuple[list[str], pd.DataFrame]:
    """The banner experiment's markdown and figures; returns (lines, impacted-user lifts)."""
    metrics = ab_metrics.banner_metrics(banner, n_resamples, seed)
    shown = metrics[[c for c in metrics.columns if not c.endswith("_mean")]]
    lifts_all = ab_metrics.lift_table(
        banner, ab_metrics.BANNER_METRICS, n_resamples=n_resamples, seed=seed
    )
    impacted = banner[banner["impacted"]]
    lifts = ab_metrics.lift_table(
        impacted, ab_metrics.BANNER_METRICS, n_resamples=n_resamples, seed=seed
    )
    calibration = ab_metrics.calibration_table(banner)
    ab_metrics.plot_lifts(
        lifts, os.path.join(out_dir, "banner_lifts.png"), "Banner: lift vs control, impacted users"
    )
    ab_metrics.plot_distribution(banner, os.path.join(out_dir, "banner_minutes_distribution.png"))
    ab_metrics.plot_calibration(calibration, os.path.join(out_dir, "calibration.png"))
    lift_rows = _with_lift_ci(lifts)
    fitted = ", ".join(
        f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
        for k, v in models.summary().items()
    )
    window = config.window_days
    lines = [
        "# Simulated A/B test of long-term (stickiness) recommendations",
        "",
        f"Seed {config.seed}; {config.n_users} simulated users, {config.history_days} days of logged history "
        f"under the myopic logging policy, then the experiments with a {window}-day window. "
        f"Models fitted on that log: {fitted}.",
        "",
        "## Headline: personalised vs control, impacted users (paper figure 6a; the paper's window is 60 days)",
        "",
        _markdown(headline_table(lifts, PAPER_BANNER_LIFTS)),
        "",
        "## Banner (paper 5.1.3): one recommendation of an unheard song per user",
        "",
        f"Users with at least one eligible song: {len(banner)}; impacted (the four arms do not all pick the "
        f"same song): {banner['impacted'].mean():.1%} (paper: 63%).",
        "",
        _markdown(shown),
        "",
        "### Lifts vs control, impacted users",
        "",
        _markdown(lift_rows[["arm", "metric", "lift (95% CI)", "baseline_mean", "arm_mean"]]),
        "",
        "![lifts](banner_lifts.png)",
        "",
        "### Lifts vs control, all users",
        "",
        _markdown(_with_lift_ci(lifts_all)[["arm", "metric", "lift (95% CI)"]]),
        "",
        "### Distribution of 60-day minutes among first-streamers (figure 6b)",
        "",
        "![distribution](banner_minutes_distribution.png)",
        "",
        "### Calibration: predicted vs observed return days (figure 6c)",
        "",
        "First-streamers of every arm, binned by the personalised prediction ⟨u, v_i⟩ for the song "
        f"they were recommended; observed = days in the next {window - 1} they came back to it.",
        "",
        _markdown(calibration),
        "",
        "![calibration](calibration.png)",
        "",
    ]
    return lines, lifts


def _policy_arms_section(arms_table: pd.DataFrame, diagnostics: dict[str, Any]) -> list[str]:
    if not len(arms_table):
        return []
    lines = [
        "## Policy (PPO actor-critic) arms",
        "",
        "Each ranks the top-k of the pool by clickiness with its actor. Banner columns: mean "
        "entropy of its distribution over those k, and how often its pick is control's "
        "(top clickiness) or personalised's (top Q-score). Log columns (arms trained on the "
        "history log): entropy and argmax on the logged decisions, and the effective sample "
        "size of its importance weights against the logging policy.",
        "",
        _markdown(arms_table),
        "",
    ]
    for arm, found in diagnostics.items():
        lines += [f"- `{arm}`: offline steps {found.get('steps')}", ""]
    return lines


def _shelf_section(
    shelf: pd.DataFrame, out_dir: str, config: Any, n_resamples: int, seed: int
) -> tuple[list[str], pd.DataFrame]:
    shelf_lifts = ab_metrics.lift_table(
        shelf, ab_metrics.SHELF_METRICS, n_resamples=n_resamples, seed=seed
    )
    weekly = ab_metrics.weekly_lifts(shelf, config.shelf_weeks)
    ab_metrics.plot_weekly(weekly, os.path.join(out_dir, "shelf_weekly.png"))
    lines = [
        f"## Shelf (paper 5.1.4): a ranked shelf of {config.shelf_size} unheard songs, weekly, "
        f"{config.shelf_weeks} weeks",
        "",
        f"Lasting discovery = at least {config.lasting_min_days} active days and "
        f"{config.lasting_min_minutes:g} minutes with a song first heard in weeks 1-6.",
        "",
        _markdown(ab_metrics.shelf_metrics(shelf)),
        "",
        _markdown(headline_table(shelf_lifts, PAPER_SHELF_LIFTS)),
        "",
        _markdown(_with_lift_ci(shelf_lifts)[["arm", "metric", "lift (95% CI)"]]),
        "",
        "Weekly minutes (all listening), lift vs control (figure 7b):",
        "",
        _markdown((100 * weekly).round(2).reset_index().rename(columns={"index": "arm"})),
        "",
        "![weekly](shelf_weekly.png)",
        "",
    ]
    return lines, shelf_lifts


def write_data_efficiency_report(
    study: pd.DataFrame,
    out_dir: str,
    action_a: str,
    action_b: str,
    auxiliary_size: dict[str, int],
    seed: int,
) -> str:
    os.makedirs(out_dir, exist_ok=True)
    study.to_csv(os.path.join(out_dir, "study.csv"), index=False)
    diff = f"{action_b} - {action_a}"
    ratios = standard_error_ratios(study, diff)
    plot_study(study, os.path.join(out_dir, "data_efficiency.png"), "Figure 9 (simulated)")
    largest = ratios.iloc[-1]
    rows = study[study["action"] == diff].copy()
    rows["95% CI"] = [
        f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(rows["ci_low"], rows["ci_high"], strict=False)
    ]
    lines = [
        "# Data efficiency of Q-value estimators (paper section 6.2)",
        "",
        f"Meta-actions: A = `{action_a}`, B = `{action_b}` (the banner arms); seed {seed}. "
        f"Auxiliary discovery datasets: {auxiliary_size}. Value = 60-day minutes.",
        "",
        f"At n = {int(largest['n'])} users per meta-action: SE(holistic)/SE(decomposed) = "
        f"**{largest['holistic/decomposed']:.1f}x** (paper: ~350x), i.e. **{largest['data multiple holistic vs decomposed']:.0f}x** "
        f"the data (paper: ~120,000x); SE(local)/SE(decomposed) = {largest['local/decomposed']:.2f}x; "
        f"SE(holistic)/SE(local) = {largest['holistic/local']:.1f}x.",
        "",
        "## Difference B - A by estimator and sample size",
        "",
        _markdown(rows[["n", "estimator", "value", "standard_error", "95% CI"]]),
        "",
        "## Ratios of standard errors",
        "",
        _markdown(ratios),
        "",
        "![study](data_efficiency.png)",
        "",
    ]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    return path


def sample_sizes_up_to(largest: int, smallest: int = 50) -> list[int]:
    """Roughly log-spaced sample sizes (1-3-10 steps) up to ``largest`` inclusive."""
    sizes: list[int] = []
    value: float = smallest
    while value < largest:
        sizes.append(int(value))
        value *= 3 if str(int(value))[0] == "1" else 10 / 3
    return sorted(set(sizes + [int(largest)]))
