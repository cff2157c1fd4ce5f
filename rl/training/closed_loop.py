"""The closed loop, repeated: production learning in the simulator (``encore loop``).

Each round is the blog's periodic fine-tuning and the paper's policy-improvement step,
done for real on one persistent simulated population:

1. serve production -- greedy with epsilon exploration (``EpsilonGreedyPolicy``), through
   the served path (``PolicyScorer`` adds the song features of its own version's table) --
   to the users for ``days`` days, logging every decision with its propensity;
2. fit the song table on everything logged so far (Ray Data, rl/longterm/song_table.py);
3. convert the round's log to offline steps whose observations carry the new table's
   features (the last ``heldout_days`` days are kept apart for the gate);
4. train the actor-critic (offline PPO) -- fine-tuned from production's checkpoint after
   the first round -- and register it with its table;
5. gate: DR on the held-out days, candidate vs production, each through its own table
   (rl/evaluation/promotion_gate.py); promote when it passes (or ``force``).

Per round it reports reward per decision, minutes and active days per user of the days
served, and the DR estimate made at the end of the previous round for the policy served
in this one, so estimate and realised value can be read side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rl import storage
from rl.config_checks import require_at_least, require_fraction
from rl.decision.observation import ObservationLayout
from rl.decision.policies import DecisionPolicy, EpsilonGreedyPolicy
from rl.evaluation.promotion_gate import GateConfig, GateEvidence, gate_promotion
from rl.longterm.song_table import FEATURE_NAMES, SongTableConfig
from rl.training.config import TrainConfig


@dataclass(frozen=True)
class LoopConfig:
    """One closed-loop experiment."""

    rounds: int = 3
    """Serve -> log -> train -> gate -> promote cycles. >= 1."""
    users: int = 2000
    """Simulated users served every round (the same population throughout). >= 1."""
    days: int = 14
    """Days served per round. >= 2 (the last ``heldout_days`` go to the gate)."""
    heldout_days: int = 3
    """Last days of each round's log kept out of training for the gate. >= 1."""
    epsilon: float = 0.05
    """Exploration of the served production policy. [0, 1]."""
    return_weight: float = 1.0
    """Reward per expected return day of a stream (the return-days value design). >= 0."""
    seed: int = 0
    """Seeds the simulated population; round r trains with seed + r."""
    force: bool = False
    """Promote every candidate, even one the gate refuses (the evidence is kept)."""
    gate: GateConfig = field(default_factory=GateConfig)
    song_table: SongTableConfig = field(default_factory=SongTableConfig)
    train: TrainConfig = TrainConfig(
        iterations=10, train_batch_size=1024, lr=1e-3, entropy_coeff=0.0
    )

    def __post_init__(self) -> None:
        require_at_least(self, 1, "rounds", "users", "heldout_days")
        if self.days <= self.heldout_days:
            raise ValueError(f"days ({self.days}) must exceed heldout_days ({self.heldout_days})")
        require_fraction(self, "epsilon")
        require_at_least(self, 0, "return_weight")


@dataclass
class RoundReport:
    round: int
    served: str
    reward_per_decision: float
    minutes_per_user: float
    active_days_per_user: float
    decisions: int
    ope_estimate: float | None
    """DR estimate of the served policy's reward per decision, made before it was served."""
    candidate: str | None = None
    gate: dict[str, Any] | None = None
    promoted: bool = False

    def line(self) -> str:
        ope = "-" if self.ope_estimate is None else f"{self.ope_estimate:.3f}"
        gate = ""
        if self.gate is not None:
            verdict = "promoted" if self.promoted else "refused"
            gate = (
                f" | candidate {self.candidate}: DR diff {self.gate['difference']:+.3f} "
                f"[{self.gate['difference_ci'][0]:+.3f}, {self.gate['difference_ci'][1]:+.3f}] "
                f"-> {verdict}"
            )
        return (
            f"round {self.round}: served {self.served} | reward/decision "
            f"{self.reward_per_decision:.3f} (OPE before serving {ope}) | minutes/user "
            f"{self.minutes_per_user:.1f} | active days/user {self.active_days_per_user:.2f} | "
            f"{self.decisions:,} decisions{gate}"
        )


def _serve_round(simulator, policy: DecisionPolicy, days: int, log_uri: str) -> dict[str, Any]:
    """Serve ``policy`` to the whole population for ``days`` days, logging everything."""
    import pyarrow as pa

    from rl.evaluation.in_simulator import OrganicMinutes
    from rl.feedback.log import FeedbackLogWriter

    # The population persists across rounds; only the policy serving it changes (and the
    # version name its log rows carry).
    simulator.policies = {0: policy}
    simulator.user_arm = np.zeros(simulator.n_users, np.int64)
    simulator._policy_versions_arrow = pa.array([policy.name], pa.string())
    n = simulator.n_users
    organic = OrganicMinutes(n)
    reward = decisions = minutes = 0.0
    active = np.zeros(n)
    durations_min = np.asarray(simulator.corpus.durations_s, np.float64) / 60.0
    layout = simulator.layout
    with FeedbackLogWriter(log_uri, k=layout.k, n_betas=layout.n_betas, background=True) as log:

        class Both:  # the log gets every row; the organic minutes are counted on the way
            def append(self, rows):
                return log.append(rows)

            def append_organic(self, rows):
                organic.append_organic(rows)
                return log.append_organic(rows)

        writer = Both()
        for _ in range(days):
            day = simulator.run_day(writer).concatenated()  # type: ignore[arg-type]
            if not day:
                continue
            reward += float(day["reward"].sum())
            decisions += len(day["reward"])
            minutes += float((day["listen_fraction"] * durations_min[day["chosen"]]).sum())
            active[np.unique(day["user"])] += 1
    return {
        "reward_per_decision": reward / max(decisions, 1),
        "minutes_per_user": (minutes + organic.minutes.sum()) / n,
        "active_days_per_user": float(active.mean()),
        "decisions": int(decisions),
    }


def run_loop(
    config: LoopConfig, out_uri: str, progress: Callable[[str], None] = print
) -> list[RoundReport]:
    """Run ``config.rounds`` rounds; needs a running Ray. Writes under ``out_uri``: logs,
    steps, runs, the registry (versions with tables and gate evidence), loop.json."""
    from rl.longterm.song_table import fit_song_table
    from rl.registry import ModelRegistry, PolicyScorer
    from rl.simulator.real_catalog import build_simulator
    from rl.songs.embedding import ensure_song_embedding
    from rl.training.lifecycle import register_run
    from rl.training.train import train

    embedding = ensure_song_embedding()
    built = build_simulator(config.users, seed=config.seed)
    simulator, corpus, base = built.simulator, built.corpus, built.layout
    layout = replace(base, song_feature_dim=len(FEATURE_NAMES))
    registry = ModelRegistry(storage.join(out_uri, "registry"))
    production: DecisionPolicy = built.policy
    production_name, production_version = "logging", None
    ope_next: float | None = None
    reports: list[RoundReport] = []
    logs: list[str] = []
    for round_index in range(1, config.rounds + 1):
        log_uri = storage.join(out_uri, f"round-{round_index}", "log")
        progress(f"round {round_index}: serving {production_name} to {config.users} users "
                 f"for {config.days} days")  # fmt: skip
        served = _serve_round(simulator, production, config.days, log_uri)
        logs.append(log_uri)
        report = RoundReport(round_index, production_name, ope_estimate=ope_next, **served)

        progress("  fitting the song table and converting the log (Ray Data)")
        table = fit_song_table(log_uri, corpus.latents, corpus.track_ids, config.song_table)
        round_uri = storage.join(out_uri, f"round-{round_index}")
        steps, heldout, gate_days = _round_steps(
            config, simulator.day, log_uri, round_uri, embedding, layout, base, table
        )
        resume = registry.checkpoint_uri(production_version) if production_version else None
        train_config = replace(config.train, seed=config.seed + round_index)
        progress(
            f"  training the actor-critic ({train_config.iterations} iterations"
            + (f", fine-tuned from {production_version})" if resume else ")")
        )
        run = train(train_config, steps, layout, storage.join(round_uri, "run"), resume_from=resume)
        entry = register_run(
            registry, run, train_config, steps, layout, parent=production_version,
            song_table=table,
        )  # fmt: skip
        evidence = _gate(
            config, registry, entry.version, production, production_version, heldout, base,
            data=f"{log_uri} days {gate_days[0]}..{gate_days[-1]}",
        )  # fmt: skip
        registry.annotate(entry.version, "promotion_gate", evidence.to_dict())
        report.candidate, report.gate, report.promoted = entry.version, evidence.to_dict(), False
        progress(f"  {evidence.summary()}")
        if evidence.promoted:
            registry.promote(entry.version)
            production = EpsilonGreedyPolicy(
                PolicyScorer.from_registry(registry, entry.version), config.epsilon
            )
            production_name, production_version = (
                f"{entry.version} (eps {config.epsilon})",
                entry.version,
            )
            report.promoted = True
            ope_next = evidence.candidate_dr
        else:
            ope_next = evidence.production_dr
        reports.append(report)
        progress(report.line())
    storage.write_json(
        storage.join(out_uri, "loop.json"),
        {"config": _config_dict(config), "rounds": [r.__dict__ for r in reports]},
    )
    return reports


def _round_steps(
    config: LoopConfig,
    today: int,  # the simulator's day after the round
    log_uri: str,
    round_uri: str,
    embedding: Any,
    layout: ObservationLayout,
    base: ObservationLayout,
    table: Any,
) -> tuple[list[str], list[str], list[int]]:
    """The round's log as training steps (with song features) of all but its last
    ``heldout_days`` days, and those last days as the gate's held-out steps (without)."""
    from rl.training.feature_steps import write_feature_steps

    start_day = today - config.days
    train_days = list(range(start_day, today - config.heldout_days))
    gate_days = list(range(today - config.heldout_days, today))
    steps = write_feature_steps(
        log_uri, storage.join(round_uri, "steps"), embedding, layout, table,
        config.return_weight, days=train_days,
    )  # fmt: skip
    heldout = write_feature_steps(
        log_uri, storage.join(round_uri, "heldout_steps"), embedding, base, None,
        days=gate_days,
    )  # fmt: skip
    return steps, heldout, gate_days


def _gate(
    config: LoopConfig,
    registry: Any,
    version: str,
    production: DecisionPolicy,
    production_version: str | None,
    heldout: list[str],
    base: ObservationLayout,
    data: str,
) -> GateEvidence:
    """The promotion gate between the registered candidate and production, greedy both,
    on the held-out steps."""
    from rl.feedback.offline_steps_files import read_logged_decisions
    from rl.registry import PolicyScorer

    candidate = EpsilonGreedyPolicy(PolicyScorer.from_registry(registry, version), 0.0)
    logged = read_logged_decisions(heldout, base)
    # The gate compares the greedy policies: exploration is the same for both.
    production_greedy = (
        EpsilonGreedyPolicy(production.base, 0.0)
        if isinstance(production, EpsilonGreedyPolicy)
        else production
    )
    return gate_promotion(
        candidate, production_greedy, logged, base, version, production_version,
        config.gate, force=config.force, data=data,
    )  # fmt: skip


def _config_dict(config: LoopConfig) -> dict[str, Any]:
    from dataclasses import asdict

    state = asdict(config)
    state["train"] = config.train.to_dict()
    return state
