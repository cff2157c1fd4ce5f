"""Per-arm metrics of the simulated A/B tests, with 95% intervals (paper figures 6 and 7).

Where it sits: reads the per-user frames of ``ab_test.run_banner`` / ``run_shelf`` and
returns tables (pandas) and figures for ``encore ab-test``'s report. Means get normal
intervals (mean ± 1.96 s/√n); medians and lifts (ratio of arm means − 1, each arm
resampled independently) get percentile bootstrap intervals, seeded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rl.experiments.data_efficiency import Z_95
from rl.figures import save_figure, subplots

BANNER_METRICS = {
    "first_stream": "first streams (share)",
    "active_days": "60-day active days with the item",
    "minutes": "60-day minutes with the item",
}


def mean_interval(values: np.ndarray) -> tuple[float, float, float]:
    values = np.asarray(values, np.float64)
    mean = float(values.mean()) if len(values) else float("nan")
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return mean, mean - Z_95 * se, mean + Z_95 * se


def bootstrap_interval(
    values: np.ndarray, statistic, n_resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    draws = rng.integers(0, len(values), size=(n_resamples, len(values)))
    stats = statistic(values[draws], axis=1)
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def _fmt(mean: float, low: float, high: float, digits: int = 3) -> str:
    return f"{mean:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def banner_metrics(frame: pd.DataFrame, n_resamples: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per arm: users, share impacted, means with 95% CIs, medians among first-streamers."""
    rng = np.random.default_rng(seed)
    records = []
    for arm, rows in frame.groupby("arm", sort=False):
        record = {"arm": arm, "users": len(rows), "impacted share": float(rows["impacted"].mean())}
        for column, label in BANNER_METRICS.items():
            mean, low, high = mean_interval(rows[column].to_numpy(np.float64))
            record[label] = _fmt(mean, low, high)
            record[f"{column}_mean"] = mean
        streamers = rows[rows["first_stream"]]
        for column in ("active_days", "minutes"):
            values = streamers[column].to_numpy(np.float64)
            median = float(np.median(values)) if len(values) else float("nan")
            low, high = bootstrap_interval(values, np.median, n_resamples, rng)
            record[f"median {column} (first-streamers)"] = _fmt(median, low, high)
        record["60-day minutes, all listening"] = _fmt(
            *mean_interval(rows["total_minutes"].to_numpy())
        )
        records.append(record)
    return pd.DataFrame.from_records(records)


def lift_table(
    frame: pd.DataFrame,
    metrics: dict[str, str],
    baseline: str = "control",
    n_resamples: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """Relative lift of each arm's mean over the baseline's, with a bootstrap 95% CI."""
    rng = np.random.default_rng(seed)
    base = frame[frame["arm"] == baseline]
    records = []
    for arm, rows in frame.groupby("arm", sort=False):
        if arm == baseline:
            continue
        for column, label in metrics.items():
            a = base[column].to_numpy(np.float64)
            b = rows[column].to_numpy(np.float64)
            if len(a) < 2 or len(b) < 2 or a.mean() == 0:
                continue
            lift = b.mean() / a.mean() - 1.0
            draws_a = a[rng.integers(0, len(a), (n_resamples, len(a)))].mean(1)
            draws_b = b[rng.integers(0, len(b), (n_resamples, len(b)))].mean(1)
            ratios = draws_b / np.where(draws_a == 0, np.nan, draws_a) - 1.0
            records.append(
                {
                    "arm": arm,
                    "metric": label,
                    "lift": lift,
                    "ci_low": float(np.nanpercentile(ratios, 2.5)),
                    "ci_high": float(np.nanpercentile(ratios, 97.5)),
                    "baseline_mean": float(a.mean()),
                    "arm_mean": float(b.mean()),
                }
            )
    return pd.DataFrame.from_records(records)


def calibration_table(
    frame: pd.DataFrame, n_bins: int = 8, column: str = "predicted_return_days"
) -> pd.DataFrame:
    """Among first-streamers: predicted vs observed return days in predicted-quantile bins."""
    streamers = frame[frame["first_stream"]]
    if len(streamers) < n_bins:
        return pd.DataFrame(columns=["bin", "users", "predicted", "observed", "ci_low", "ci_high"])
    edges = np.unique(np.quantile(streamers[column], np.linspace(0, 1, n_bins + 1)))
    bins = np.clip(np.searchsorted(edges, streamers[column], side="right") - 1, 0, len(edges) - 2)
    records = []
    for b in np.unique(bins):
        rows = streamers[bins == b]
        mean, low, high = mean_interval(rows["return_days"].to_numpy(np.float64))
        records.append(
            {
                "bin": int(b),
                "users": len(rows),
                "predicted": float(rows[column].mean()),
                "observed": mean,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pd.DataFrame.from_records(records)


SHELF_METRICS = {
    "week_8_minutes": "week-8 minutes, all listening",
    "discovery_minutes": "minutes with discoveries (weeks 1-6)",
    "lasting_discovery": "users with a lasting discovery",
}


def shelf_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    records = []
    for arm, rows in frame.groupby("arm", sort=False):
        record = {"arm": arm, "users": len(rows)}
        for column, label in SHELF_METRICS.items():
            record[label] = _fmt(*mean_interval(rows[column].to_numpy(np.float64)))
        records.append(record)
    return pd.DataFrame.from_records(records)


def weekly_lifts(frame: pd.DataFrame, weeks: int, baseline: str = "control") -> pd.DataFrame:
    """Per week and arm: lift of mean weekly minutes over the baseline (figure 7b)."""
    columns = [f"week_{w + 1}_minutes" for w in range(weeks)]
    means = frame.groupby("arm")[columns].mean()
    lifts = means.div(means.loc[baseline]) - 1.0
    lifts.columns = list(range(1, weeks + 1))
    return lifts.drop(index=baseline)


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------
def plot_lifts(lifts: pd.DataFrame, path: str, title: str) -> None:
    metrics = list(dict.fromkeys(lifts["metric"]))
    arms = list(dict.fromkeys(lifts["arm"]))
    fig, axis = subplots(figsize=(2.5 + 2.2 * len(metrics), 4))
    width = 0.8 / max(len(arms), 1)
    for a, arm in enumerate(arms):
        rows = lifts[lifts["arm"] == arm].set_index("metric").reindex(metrics)
        x = np.arange(len(metrics)) + a * width
        axis.bar(x, 100 * rows["lift"], width, label=arm)
        axis.errorbar(
            x, 100 * rows["lift"],
            yerr=[100 * (rows["lift"] - rows["ci_low"]), 100 * (rows["ci_high"] - rows["lift"])],
            fmt="none", ecolor="black", capsize=3,
        )  # fmt: skip
    axis.axhline(0, color="grey", lw=0.8)
    axis.set_xticks(np.arange(len(metrics)) + width * (len(arms) - 1) / 2)
    axis.set_xticklabels(
        [m.replace(" with the item", "\nwith the item") for m in metrics], fontsize=8
    )
    axis.set_ylabel("lift vs control (%)")
    axis.set_title(title)
    axis.legend()
    save_figure(fig, path)


def plot_distribution(frame: pd.DataFrame, path: str, column: str = "minutes") -> None:
    """Survival curve of 60-day item minutes among first-streamers, per arm (figure 6b)."""
    fig, axis = subplots(figsize=(6, 4))
    for arm, rows in frame[frame["first_stream"]].groupby("arm", sort=False):
        values = np.sort(rows[column].to_numpy())
        if not len(values):
            continue
        share = 1.0 - np.arange(len(values)) / len(values)
        axis.step(
            np.maximum(values, 0.1),
            share,
            where="post",
            label=f"{arm} (median {np.median(values):.1f})",
        )
    axis.set_xscale("log")
    axis.set_xlabel(f"60-day {column} with the recommended item (first-streamers)")
    axis.set_ylabel("share of first-streamers with at least x")
    axis.legend(fontsize=8)
    save_figure(fig, path)


def plot_calibration(table: pd.DataFrame, path: str) -> None:
    fig, axis = subplots(figsize=(4.5, 4.5))
    if len(table):
        axis.errorbar(
            table["predicted"], table["observed"],
            yerr=[table["observed"] - table["ci_low"], table["ci_high"] - table["observed"]],
            fmt="o", capsize=3, label="binned first-streamers",
        )  # fmt: skip
        top = float(max(table["predicted"].max(), table["ci_high"].max())) * 1.1
        axis.plot([0, top], [0, top], "k--", lw=0.8, label="perfect calibration")
    axis.set_xlabel("predicted return days ⟨u, v_i⟩")
    axis.set_ylabel("observed return days (59 days)")
    axis.legend(fontsize=8)
    save_figure(fig, path)


def plot_weekly(lifts: pd.DataFrame, path: str) -> None:
    fig, axis = subplots(figsize=(6, 4))
    for arm, row in lifts.iterrows():
        axis.plot(row.index, 100 * row.to_numpy(), "o-", label=arm)
    axis.axhline(0, color="grey", lw=0.8)
    axis.set_xlabel("weeks since first exposure")
    axis.set_ylabel("weekly minutes, lift vs control (%)")
    axis.legend()
    save_figure(fig, path)
