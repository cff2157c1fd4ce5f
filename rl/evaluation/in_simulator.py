"""Online comparison in the simulator: trained policies against the logging policy.

Where it sits: ``encore evaluate`` runs it after the off-policy estimates, so a version's
OPE and its simulated online value can be read side by side. Users are assigned at
random to arms (logging, offline PPO, MARWIL, BC ...), all arms share one simulated world
for ``days`` days, and per arm we report the mean reward per decision and per-user
outcomes over the whole window (reward, active days, streams from recommendations), each
with a 95% bootstrap interval over users, plus the difference to the logging arm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rl.decision.policies import DecisionPolicy


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


def difference_cell(interval: Interval | None) -> str:
    """A report cell for a paired difference: the interval, `*` when it excludes zero."""
    if interval is None:
        return "-"
    return f"{interval}{' *' if interval.excludes_zero() else ''}"


@dataclass(frozen=True)
class ArmOutcome:
    arm: str
    users: int
    decisions: int
    reward_per_decision: Interval
    reward_per_user: Interval
    active_days_per_user: Interval
    streams_per_user: Interval
    reward_per_decision_vs_logging: Interval | None


def _per_user_bootstrap(
    numerators: np.ndarray,
    denominators: np.ndarray | None,
    rng: np.random.Generator,
    n_bootstrap: int,
) -> Interval:
    """Ratio of sums (or mean) over users with a user-level percentile bootstrap."""
    n = len(numerators)
    rows = rng.integers(0, n, size=(n_bootstrap, n))
    if denominators is None:
        value, samples = numerators.mean(), numerators[rows].mean(1)
    else:
        value = numerators.sum() / max(denominators.sum(), 1)
        samples = numerators[rows].sum(1) / np.maximum(denominators[rows].sum(1), 1)
    low, high = np.percentile(samples, [2.5, 97.5])
    return Interval(float(value), float(low), float(high))


def _difference(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    n_bootstrap: int,
) -> Interval:
    """Reward per decision of arm a minus arm b (independent user populations)."""

    def draws(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        rows = rng.integers(0, len(num), size=(n_bootstrap, len(num)))
        return num[rows].sum(1) / np.maximum(den[rows].sum(1), 1)

    value = a[0].sum() / max(a[1].sum(), 1) - b[0].sum() / max(b[1].sum(), 1)
    low, high = np.percentile(draws(*a) - draws(*b), [2.5, 97.5])
    return Interval(float(value), float(low), float(high))


LOGGING_ARM = "logging"


def compare_in_simulator(
    trained: Mapping[str, DecisionPolicy],
    n_users: int = 3000,
    days: int = 60,
    seed: int = 0,
    n_bootstrap: int = 1000,
    calibrate: bool = True,
    simulator=None,
) -> list[ArmOutcome]:
    """Run the logging policy and the ``trained`` policies as arms of one simulation.

    ``simulator``: a ready ``Simulator`` whose arms include ``"logging"`` (tests); the
    default is the real-catalog simulator (rl/simulator/real_catalog.py) with the default
    logging policy as arm ``"logging"`` and one arm per ``trained`` policy.
    """
    if simulator is None:
        simulator = _default_simulator(trained, n_users, seed, calibrate)
    if LOGGING_ARM not in simulator.arm_names:
        raise ValueError(f"the simulator has no {LOGGING_ARM!r} arm: {simulator.arm_names}")
    logging_arm = LOGGING_ARM
    n = simulator.n_users
    arms = np.asarray(simulator.user_arm)
    reward = np.zeros(n)
    decisions = np.zeros(n)
    streams = np.zeros(n)
    active_days = np.zeros(n)
    for _ in range(days):
        day = simulator.run_day().concatenated()
        if not day:
            continue
        users = day["user"]
        np.add.at(reward, users, day["reward"])
        np.add.at(decisions, users, 1)
        np.add.at(streams, users, day["listened"].astype(float))
        active_days[np.unique(users)] += 1
    rng = np.random.default_rng(seed)
    outcomes = []
    names = list(simulator.arm_names)
    logging_index = names.index(logging_arm)
    logging_users = arms == logging_index
    for index, name in enumerate(names):
        members = arms == index
        diff = None
        if index != logging_index:
            diff = _difference(
                (reward[members], decisions[members]),
                (reward[logging_users], decisions[logging_users]),
                rng,
                n_bootstrap,
            )
        outcomes.append(
            ArmOutcome(
                arm=name,
                users=int(members.sum()),
                decisions=int(decisions[members].sum()),
                reward_per_decision=_per_user_bootstrap(
                    reward[members], decisions[members], rng, n_bootstrap
                ),
                reward_per_user=_per_user_bootstrap(reward[members], None, rng, n_bootstrap),
                active_days_per_user=_per_user_bootstrap(
                    active_days[members], None, rng, n_bootstrap
                ),
                streams_per_user=_per_user_bootstrap(streams[members], None, rng, n_bootstrap),
                reward_per_decision_vs_logging=diff,
            )
        )
    return outcomes


def _default_simulator(
    trained: Mapping[str, DecisionPolicy], n_users: int, seed: int, calibrate: bool
):
    from rl.simulator.real_catalog import build_simulator
    from rl.simulator.simulation import Simulator

    # The same world (corpus seed, calibration) the logs are simulated in by default.
    built = build_simulator(min(n_users, 500), seed=seed, calibrate=calibrate)
    arms = {LOGGING_ARM: built.policy, **trained}
    return Simulator(
        built.corpus, n_users, arms, built.layout, config=built.simulator.config, seed=seed + 1
    )


# ---------------------------------------------------------------------------------------
# The issue-13 comparison: reward/decision, 60-day minutes and active days, paired
# ---------------------------------------------------------------------------------------
METRICS = ("reward_per_decision", "minutes_60d", "active_days_60d")
"""The per-arm metrics of ``comparison.json``: mean reward per decision, minutes listened
per user over the window (recommended plays + organic returns), active days per user."""


class OrganicMinutes:
    """Receives the simulator's log rows like a ``FeedbackLogWriter`` and keeps only the
    per-user organic minutes (the decision rows are counted from the day's buffer)."""

    def __init__(self, n_users: int) -> None:
        self.minutes = np.zeros(n_users)

    def append(self, rows) -> int:
        return 0

    def append_organic(self, rows) -> int:
        users = np.asarray([int(u[1:]) for u in rows.column("user_id").to_pylist()], np.int64)
        np.add.at(self.minutes, users, rows.column("minutes").to_numpy())
        return len(users)


def run_population_outcomes(simulator, days: int) -> dict[str, np.ndarray]:
    """Per-user totals over ``days``: reward, decisions, minutes, active days."""
    n = simulator.n_users
    totals = {name: np.zeros(n) for name in ("reward", "decisions", "minutes", "active_days")}
    organic = OrganicMinutes(n)
    durations_min = np.asarray(simulator.corpus.durations_s, np.float64) / 60.0
    for _ in range(days):
        day = simulator.run_day(organic).concatenated()  # type: ignore[arg-type]
        if not day:
            continue
        users = day["user"]
        np.add.at(totals["reward"], users, day["reward"])
        np.add.at(totals["decisions"], users, 1)
        np.add.at(totals["minutes"], users, day["listen_fraction"] * durations_min[day["chosen"]])
        totals["active_days"][np.unique(users)] += 1
    totals["minutes"] += organic.minutes
    return totals


def paired_comparison(
    policies: Mapping[str, DecisionPolicy],
    make_simulator,
    days: int,
    seed: int = 0,
    n_bootstrap: int = 1000,
    baselines: tuple[str, ...] = (LOGGING_ARM,),
    on_arm=None,
) -> dict[str, Any]:
    """Every arm on the same population: ``make_simulator(policy)`` returns a fresh
    simulator with all users on ``policy`` and the same seed each call, so each arm meets
    the same users (tastes, activity, clickiness) -- a paired design: differences are
    bootstrapped over users with the same resampled users in both arms, which removes the
    between-user variance that dominates a randomised split. (The simulator's single
    random stream diverges once the arms' choices differ, so the within-user noise is not
    shared.) Returns ``{"arms": {arm: {metric: {"mean", "ci"}}},
    "differences": {arm: {"vs_<baseline>": {metric: {"mean", "ci"}}}}}`` with 95% paired
    user-level bootstrap intervals (the same resampled users in every arm)."""
    missing = [b for b in baselines if b not in policies]
    if missing:
        raise ValueError(f"baseline arms {missing} are not among the policies {sorted(policies)}")
    totals = {}
    for name, policy in policies.items():
        totals[name] = run_population_outcomes(make_simulator(policy), days)
        if on_arm is not None:
            on_arm(name, totals[name])
    n = len(next(iter(totals.values()))["reward"])
    rows = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))

    def metric_draws(t: dict[str, np.ndarray], metric: str) -> tuple[float, np.ndarray]:
        if metric == "reward_per_decision":
            value = t["reward"].sum() / max(t["decisions"].sum(), 1)
            draws = t["reward"][rows].sum(1) / np.maximum(t["decisions"][rows].sum(1), 1)
            return float(value), draws
        values = t["minutes" if metric == "minutes_60d" else "active_days"]
        return float(values.mean()), values[rows].mean(1)

    def cell(value: float, draws: np.ndarray) -> dict:
        low, high = np.percentile(draws, [2.5, 97.5])
        return {"mean": value, "ci": [float(low), float(high)]}

    draws = {name: {m: metric_draws(t, m) for m in METRICS} for name, t in totals.items()}
    arms = {name: {m: cell(*draws[name][m]) for m in METRICS} for name in totals}
    differences: dict[str, dict] = {}
    for name in totals:
        differences[name] = {}
        for base in baselines:
            if base == name:
                continue
            differences[name][f"vs_{base}"] = {
                m: cell(
                    draws[name][m][0] - draws[base][m][0], draws[name][m][1] - draws[base][m][1]
                )
                for m in METRICS
            }
    result: dict[str, Any] = {"arms": arms, "differences": differences, "users": n, "days": days}
    return result
