"""Data efficiency of Q-value estimators (paper section 6.2, figure 9).

Where it sits: the measurement side of the long-term pipeline. ``ab_test`` produces, for
each meta-action a (the arm that chose a user's one recommendation), per-user outcomes
D_a = {(E, Y, W)}: E engaged with the recommendation (first stream), Y 60-day minutes with
the recommended item, W 60-day minutes with *everything*; and an auxiliary dataset Z_a of
60-day minutes of users who discovered items through a (disjoint users, standing in for
the platform-wide discovery data the stickiness models pool). Three estimators of the
value of a, with equal expectations under the paper's assumptions:

    holistic     V̂ = mean(W)                 SE = sd(W) / √n
    local        V̂ = mean(Y)                 SE = sd(Y) / √n
    decomposed   V̂ = p̂ · z̄,  p̂ = mean(E), z̄ = mean(Z)  (independent samples)
                 Var = z̄² Var(p̂) + p̂² Var(z̄) + Var(p̂) Var(z̄),
                 Var(p̂) = s_E² / n,  Var(z̄) = s_Z² / m   (exact for independent factors)

``sample_size_study`` evaluates them on subsamples of growing size n; the ratio of
standard errors squared is how much more data the noisier estimator needs for the same
precision (the paper: holistic SE ≈ 350× decomposed, i.e. ≈ 120,000× the data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rl.figures import save_figure, subplots

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error."""

    value: float
    standard_error: float
    n: int

    def interval(self, z: float = Z_95) -> tuple[float, float]:
        """Normal-approximation confidence interval (95% by default)."""
        return self.value - z * self.standard_error, self.value + z * self.standard_error


def _mean_and_variance(values: np.ndarray) -> tuple[float, float, int]:
    values = np.asarray(values, np.float64)
    n = len(values)
    if n < 2:
        raise ValueError(f"need at least 2 observations for a standard error, got {n}")
    return float(values.mean()), float(values.var(ddof=1)), n


def mean_estimate(values: np.ndarray) -> Estimate:
    """Sample mean with SE = s / √n."""
    mean, variance, n = _mean_and_variance(values)
    return Estimate(mean, float(np.sqrt(variance / n)), n)


def holistic_estimate(total_minutes: np.ndarray) -> Estimate:
    """Mean of each user's 60-day minutes with everything."""
    return mean_estimate(total_minutes)


def local_estimate(item_minutes: np.ndarray) -> Estimate:
    """Mean of each user's 60-day minutes with the recommended item."""
    return mean_estimate(item_minutes)


def decomposed_estimate(engaged: np.ndarray, auxiliary_minutes: np.ndarray) -> Estimate:
    """P(engage) from the randomised sample times mean post-discovery minutes from Z."""
    p, var_e, n = _mean_and_variance(np.asarray(engaged, np.float64))
    z, var_z, m = _mean_and_variance(auxiliary_minutes)
    var_p, var_zbar = var_e / n, var_z / m
    variance = z * z * var_p + p * p * var_zbar + var_p * var_zbar
    return Estimate(p * z, float(np.sqrt(variance)), n)


def difference(a: Estimate, b: Estimate) -> Estimate:
    """b − a for independent estimates (SE adds in quadrature)."""
    return Estimate(
        b.value - a.value, float(np.hypot(a.standard_error, b.standard_error)), min(a.n, b.n)
    )


@dataclass(frozen=True)
class MetaActionOutcomes:
    """Per-user outcomes of one meta-action (arm) and its auxiliary discovery minutes."""

    name: str
    engaged: np.ndarray  # (N,) bool first stream of the recommended item
    item_minutes: np.ndarray  # (N,) 60-day minutes with the recommended item
    total_minutes: np.ndarray  # (N,) 60-day minutes with all items
    auxiliary_minutes: np.ndarray  # (M,) 60-day item minutes of (other) users who discovered

    def __post_init__(self) -> None:
        n = len(self.engaged)
        if len(self.item_minutes) != n or len(self.total_minutes) != n:
            raise ValueError("engaged, item_minutes and total_minutes must have the same length")
        if len(self.auxiliary_minutes) < 2:
            raise ValueError("the auxiliary dataset needs at least 2 discoveries")


ESTIMATORS = ("holistic", "local", "decomposed")


def estimate_all(
    outcomes: MetaActionOutcomes, rows: np.ndarray | None = None
) -> dict[str, Estimate]:
    """The three estimators on the users ``rows`` (all by default)."""
    rows = np.arange(len(outcomes.engaged)) if rows is None else rows
    return {
        "holistic": holistic_estimate(outcomes.total_minutes[rows]),
        "local": local_estimate(outcomes.item_minutes[rows]),
        "decomposed": decomposed_estimate(outcomes.engaged[rows], outcomes.auxiliary_minutes),
    }


def sample_size_study(
    action_a: MetaActionOutcomes,
    action_b: MetaActionOutcomes,
    sample_sizes: list[int],
    seed: int = 0,
) -> pd.DataFrame:
    """Estimates of both actions and of their difference at each sample size n per action.

    Users are drawn without replacement (with replacement once n exceeds the population,
    a bootstrap). Returns one row per (n, estimator, action in {a, b, b−a}) with value,
    standard_error, ci_low, ci_high.
    """
    rng = np.random.default_rng(seed)
    records = []
    for n in sample_sizes:
        if n < 2:
            raise ValueError(f"sample sizes must be >= 2, got {n}")
        estimates = {}
        for key, outcomes in (("a", action_a), ("b", action_b)):
            population = len(outcomes.engaged)
            rows = rng.choice(population, size=n, replace=n > population)
            estimates[key] = estimate_all(outcomes, rows)
        for estimator in ESTIMATORS:
            a, b = estimates["a"][estimator], estimates["b"][estimator]
            for action, estimate in (
                (action_a.name, a),
                (action_b.name, b),
                (f"{action_b.name} - {action_a.name}", difference(a, b)),
            ):
                low, high = estimate.interval()
                records.append(
                    {
                        "n": n,
                        "estimator": estimator,
                        "action": action,
                        "value": estimate.value,
                        "standard_error": estimate.standard_error,
                        "ci_low": low,
                        "ci_high": high,
                    }
                )
    return pd.DataFrame.from_records(records)


def standard_error_ratios(study: pd.DataFrame, action: str) -> pd.DataFrame:
    """Per n: SE(holistic)/SE(decomposed), SE(local)/SE(decomposed), SE(holistic)/SE(local),
    and the data multiple (ratio²) the noisier estimator needs for the same precision."""
    wide = study[study["action"] == action].pivot(
        index="n", columns="estimator", values="standard_error"
    )
    out = pd.DataFrame(index=wide.index)
    out["holistic/decomposed"] = wide["holistic"] / wide["decomposed"]
    out["local/decomposed"] = wide["local"] / wide["decomposed"]
    out["holistic/local"] = wide["holistic"] / wide["local"]
    out["data multiple holistic vs decomposed"] = out["holistic/decomposed"] ** 2
    return out.reset_index()


def plot_study(study: pd.DataFrame, path: str, title: str = "") -> None:
    """Paper figure 9: estimates ± 95% CI against n, one panel per estimator; and SEs."""
    actions = [a for a in study["action"].unique() if " - " not in a]
    fig, axes = subplots(1, len(ESTIMATORS) + 1, figsize=(5 * (len(ESTIMATORS) + 1), 4))
    for axis, estimator in zip(axes, ESTIMATORS, strict=False):
        for offset, action in zip((0.97, 1.03), actions, strict=False):
            rows = study[(study["estimator"] == estimator) & (study["action"] == action)]
            axis.errorbar(
                rows["n"] * offset,
                rows["value"],
                yerr=[rows["value"] - rows["ci_low"], rows["ci_high"] - rows["value"]],
                fmt="o-",
                capsize=3,
                label=action,
            )
        axis.set_xscale("log")
        axis.set_xlabel("users per meta-action (n)")
        axis.set_ylabel("estimated value (60-day minutes)")
        axis.set_title(f"{estimator}")
        axis.legend()
    diff = [a for a in study["action"].unique() if " - " in a][0]
    for estimator in ESTIMATORS:
        rows = study[(study["estimator"] == estimator) & (study["action"] == diff)]
        axes[-1].plot(rows["n"], rows["standard_error"], "o-", label=estimator)
    axes[-1].set_xscale("log")
    axes[-1].set_yscale("log")
    axes[-1].set_xlabel("users per meta-action (n)")
    axes[-1].set_ylabel(f"SE of {diff}")
    axes[-1].set_title("standard errors")
    axes[-1].legend()
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def outcomes_from_banner(
    banner: pd.DataFrame, arm: str, auxiliary_fraction: float, rng: np.random.Generator
) -> MetaActionOutcomes:
    """Meta-action outcomes of one banner arm (``ab_test.run_banner``'s frame).

    As in the paper (section 6.2.2), the auxiliary discovery dataset Z is a disjoint part
    of the arm's users (``auxiliary_fraction``): the item minutes of those who engaged;
    the rest form the randomised sample D.
    """
    if not 0.0 < auxiliary_fraction < 1.0:
        raise ValueError(f"auxiliary_fraction must be in (0, 1), got {auxiliary_fraction}")
    rows = banner[banner["arm"] == arm]
    if len(rows) < 10:
        raise ValueError(f"arm {arm!r} has {len(rows)} users; need at least 10")
    is_auxiliary = rng.random(len(rows)) < auxiliary_fraction
    auxiliary = rows[is_auxiliary & rows["first_stream"].to_numpy()]
    sample = rows[~is_auxiliary]
    return MetaActionOutcomes(
        name=arm,
        engaged=sample["first_stream"].to_numpy(bool),
        item_minutes=sample["minutes"].to_numpy(np.float64),
        total_minutes=sample["total_minutes"].to_numpy(np.float64),
        auxiliary_minutes=auxiliary["minutes"].to_numpy(np.float64),
    )
