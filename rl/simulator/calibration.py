"""Calibration of the simulator's skip levels against the real MSSD rows.

The response model is an ordinal logit: a listen utility (with logistic noise) falls
between three thresholds into skip_1 / skip_2 / skip_3 / not_skipped. The thresholds are
the only free parameters of the skip-level shares, so they are fitted to the real shares:
run a pilot population under the logging policy, take the quantiles of the utilities of
the recommended songs at the real cumulative shares, and repeat (the thresholds change
what users stream, hence their familiarity and later utilities) until they settle.
Validation is separate: ``skip_shares_of_run`` on a fresh population, another seed and
more days must land within 5 percentage points of the real shares (tests/rl/simulator/test_simulator.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rl.decision.observation import ObservationLayout
from rl.decision.policies import DecisionPolicy
from rl.feedback.reward import SKIP_LEVEL_NAMES
from rl.simulator.config import SimulatorConfig
from rl.simulator.corpus import Corpus
from rl.simulator.simulation import Simulator


@dataclass(frozen=True)
class Calibration:
    """Result of ``calibrate_skip_thresholds``."""

    config: SimulatorConfig  # the input config with fitted skip_thresholds
    target_shares: dict[str, float]
    pilot_shares: dict[str, float]  # shares of the last pilot run (before its refit)
    iterations: int


def skip_shares_of_run(
    corpus: Corpus,
    policy: DecisionPolicy,
    layout: ObservationLayout,
    config: SimulatorConfig,
    n_users: int,
    days: int,
    seed: int,
) -> dict[str, float]:
    """Skip-level shares of all decisions of a fresh simulation."""
    simulator = Simulator(corpus, n_users, policy, layout, config=config, seed=seed)
    return simulator.run(days).skip_shares


def calibrate_skip_thresholds(
    corpus: Corpus,
    policy: DecisionPolicy,
    layout: ObservationLayout,
    target_shares: dict[str, float],
    config: SimulatorConfig | None = None,
    n_users: int = 3_000,
    days: int = 14,
    iterations: int = 3,
    seed: int = 12_345,
) -> Calibration:
    """Fit ``skip_thresholds`` so the pilot's skip shares match ``target_shares``."""
    config = config or SimulatorConfig()
    shares = np.array([target_shares[name] for name in SKIP_LEVEL_NAMES], np.float64)
    if np.any(shares < 0) or not np.isclose(shares.sum(), 1.0, atol=1e-6):
        raise ValueError(f"target_shares must be >= 0 and sum to 1, got {target_shares}")
    cumulative = np.cumsum(shares)[:3]
    pilot_shares: dict[str, float] = {}
    for _ in range(iterations):
        simulator = Simulator(corpus, n_users, policy, layout, config=config, seed=seed)
        utilities = []
        for _ in range(days):
            buffer = simulator.run_day()
            if len(buffer):
                utilities.append(np.concatenate(buffer.columns["utility"]))
        pilot_shares = simulator.summary.skip_shares
        thresholds = np.quantile(np.concatenate(utilities), cumulative)
        thresholds = np.maximum.accumulate(thresholds + np.array([0.0, 1e-6, 2e-6]))
        config = config.replace(skip_thresholds=tuple(float(t) for t in thresholds))
    return Calibration(
        config=config,
        target_shares={name: float(s) for name, s in zip(SKIP_LEVEL_NAMES, shares, strict=True)},
        pilot_shares=pilot_shares,
        iterations=iterations,
    )
