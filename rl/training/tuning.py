"""``encore tune``: Ray Tune over offline PPO's settings, selected on held-out OPE.

Where it sits: between the feedback logs and ``encore train``. It fits the per-song table
on the training log (rl/longterm/song_table.py), converts the training log to offline
steps with the song features (one step set per return weight of the search space: the
paper's long-term term w x listened x <u, v_i> in the reward, 0 = the session reward) and
the held-out log to steps under the session reward, then runs ``trials`` Ray Tune trials.
Each trial trains offline PPO (rl/training/train.py) on the training steps with the
sampled learning rate, entropy coefficient, clip, gamma, lambda and return weight, and
reports the doubly-robust estimate (rl/evaluation/ope.py) of its greedy policy's
reward per decision on the **held-out log** -- the selection never sees evaluation users
or simulator outcomes. The first trial is always TrainConfig's defaults (return weight
0), so the table says whether tuning beat them.

Outputs under ``out``: ``trials.csv`` and ``trials.md`` (one row per trial: settings, DR
with its 95% bootstrap interval, the final entropy, seconds), ``chosen.json`` (the winning
settings, its estimate, the defaults' estimate and whether the winner's interval lies
above the defaults' point estimate), and Ray Tune's own experiment folder (``tune/``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from rl import storage
from rl.training.config import TrainConfig

TUNED_FIELDS = ("lr", "entropy_coeff", "clip", "gamma", "lambda_")
"""TrainConfig fields a trial samples (besides the reward's return weight)."""


@dataclass(frozen=True)
class TuneSettings:
    trials: int = 8
    """Ray Tune trials (the first one is TrainConfig's defaults). >= 1."""
    iterations: int = 8
    """Training iterations per trial."""
    train_batch_size: int = 1024
    """Minibatch size of every trial's updates."""
    updates_per_iteration: int = 10
    """Minibatch updates per iteration."""
    lr_range: tuple[float, float] = (1e-4, 3e-3)
    """Learning rate, sampled log-uniformly in [low, high]."""
    entropy_range: tuple[float, float] = (0.0, 0.02)
    """Entropy coefficient, uniform in [low, high]."""
    clip_range: tuple[float, float] = (0.1, 0.5)
    """PPO clip epsilon, uniform in [low, high]."""
    gamma_range: tuple[float, float] = (0.0, 0.95)
    """Discount over a session's steps, uniform in [low, high]."""
    lambda_range: tuple[float, float] = (0.5, 1.0)
    """GAE lambda, uniform in [low, high]."""
    return_weights: tuple[float, ...] = (0.0, 1.0)
    """Reward weights w of the paper's long-term term (w x listened x expected return
    days) a trial chooses from; 0 = the session reward only. Each needs its own steps."""
    bootstrap: int = 300
    """Bootstrap resamples of each trial's DR interval."""
    cpus_per_trial: float = 0.5
    """CPUs Ray Tune reserves per trial (the rest runs the trial's Ray Data reads)."""
    seed: int = 0
    """Seed of the sampler (Ray Tune's random search) and of every trial's training."""

    def __post_init__(self) -> None:
        for name in ("trials", "iterations", "train_batch_size", "updates_per_iteration"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_range", "entropy_range", "clip_range", "gamma_range", "lambda_range"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be 0 <= low <= high, got {getattr(self, name)}")
        if self.lr_range[0] <= 0:
            raise ValueError(f"lr_range must be > 0, got {self.lr_range}")
        if self.gamma_range[1] > 1 or self.lambda_range[1] > 1:
            raise ValueError("gamma_range and lambda_range must lie in [0, 1]")
        if not self.return_weights or min(self.return_weights) < 0:
            raise ValueError(f"return_weights must be >= 0, got {self.return_weights}")
        if self.bootstrap < 10:
            raise ValueError(f"bootstrap must be >= 10, got {self.bootstrap}")
        if not 0 < self.cpus_per_trial <= 64:
            raise ValueError(f"cpus_per_trial must be in (0, 64], got {self.cpus_per_trial}")

    def base_train_config(self) -> TrainConfig:
        return replace(
            TrainConfig(),
            iterations=self.iterations,
            train_batch_size=self.train_batch_size,
            updates_per_iteration=self.updates_per_iteration,
            checkpoint_every=self.iterations,
            seed=self.seed,
        )

    def default_point(self) -> dict[str, float]:
        """TrainConfig's defaults with the session reward: the trial to beat."""
        defaults = TrainConfig()
        point: dict[str, float] = {name: float(getattr(defaults, name)) for name in TUNED_FIELDS}
        point["return_weight"] = 0.0 if 0.0 in self.return_weights else self.return_weights[0]
        return point


def search_space(settings: TuneSettings) -> dict[str, Any]:
    """Ray Tune's param_space for the settings' ranges."""
    from ray import tune

    return {
        "lr": tune.loguniform(*settings.lr_range),
        "entropy_coeff": tune.uniform(*settings.entropy_range),
        "clip": tune.uniform(*settings.clip_range),
        "gamma": tune.uniform(*settings.gamma_range),
        "lambda_": tune.uniform(*settings.lambda_range),
        "return_weight": tune.choice(list(settings.return_weights)),
    }


def trial_train_config(base: TrainConfig, point: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a trial trains with (validated: a bad point fails the trial)."""
    tuned: dict[str, Any] = {name: float(point[name]) for name in TUNED_FIELDS}
    return replace(base, **tuned)


@dataclass
class TrialResult:
    trial_id: str
    point: dict[str, float]
    dr: float
    dr_low: float
    dr_high: float
    final_entropy: float
    seconds: float


@dataclass
class TuneReport:
    trials: list[TrialResult]
    chosen: TrialResult
    defaults: TrialResult | None
    chosen_json: dict[str, Any] = field(default_factory=dict)
    out_uri: str = ""


def _run_trial(
    point: dict[str, Any],
    base: dict[str, Any],
    steps: dict[str, list[str]],
    layout_state: dict[str, Any],
    heldout: Any,
    work_uri: str,
    bootstrap: int,
    seed: int,
) -> None:
    """One Ray Tune trial: train offline PPO with ``point``, report its held-out DR.

    The work runs in a Ray task outside the trial's placement group: Tune reserves only
    ``cpus_per_trial`` for the trial, and the training's Ray Data reads and shuffles need
    CPUs of their own (captured in the trial's bundle they could never be scheduled)."""
    import ray
    from ray import tune
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    trial_id = tune.get_context().get_trial_id() or f"t{int(time.time())}"
    # placement_group=None = no placement group (Ray's documented way out of capture).
    outside_the_trial_bundle = PlacementGroupSchedulingStrategy(placement_group=None)  # type: ignore[arg-type]
    task = ray.remote(num_cpus=0)(_train_and_score).options(
        scheduling_strategy=outside_the_trial_bundle
    )
    tune.report(
        ray.get(
            task.remote(
                point,
                base,
                steps,
                layout_state,
                heldout,
                storage.join(work_uri, trial_id),
                bootstrap,
                seed,
                trial_id,
            )
        )  # fmt: skip
    )


def _train_and_score(
    point: dict[str, Any],
    base: dict[str, Any],
    steps: dict[str, list[str]],
    layout_state: dict[str, Any],
    heldout: Any,
    run_uri: str,
    bootstrap: int,
    seed: int,
    name: str,
) -> dict[str, float]:
    """Train offline PPO with ``point``; the DR estimate of its greedy policy on ``heldout``."""
    import torch

    from rl.decision.observation import ObservationLayout
    from rl.registry import PolicyScorer
    from rl.training.module import build_module
    from rl.training.train import train

    torch.set_num_threads(1)
    layout = ObservationLayout.from_dict(layout_state)
    config = trial_train_config(TrainConfig.from_dict(base), point)
    started = time.perf_counter()
    run = train(config, steps[_weight_key(point["return_weight"])], layout, run_uri)
    module = build_module(layout, config.hidden_sizes)
    module.set_state(run.module_weights)
    module.eval()
    policy = PolicyScorer(module, name, greedy=True)
    dr = _held_out_dr(policy.action_probabilities(heldout.obs), heldout, layout, bootstrap, seed)
    final = run.final_metrics()
    return {
        "dr": float(dr.value),
        "dr_low": float(dr.ci_low),
        "dr_high": float(dr.ci_high),
        "final_entropy": float(final.get("final_entropy", float("nan"))),
        "seconds": time.perf_counter() - started,
    }


def _held_out_dr(probabilities: np.ndarray, logged: Any, layout: Any, bootstrap: int, seed: int):
    """The DR estimate of ``probabilities`` on the held-out decisions."""
    from rl.evaluation.ope import evaluate_policy_offline

    estimates = evaluate_policy_offline(
        probabilities, logged, layout, n_bootstrap=bootstrap, seed=seed
    )
    return next(e for e in estimates if e.estimator == "DR")


def _weight_key(weight: float) -> str:
    return f"w{float(weight):g}"


def _infer_k(log_uri: str) -> int:
    import pyarrow.compute as pc

    from rl.feedback.log import read_decisions_table

    table = read_decisions_table(log_uri, validate=False)
    if not table.num_rows:
        raise ValueError(f"{log_uri} holds no decisions")
    return int(pc.max(pc.list_value_length(table["candidate_track_ids"])).as_py())


def prepare_data(
    settings: TuneSettings,
    log_uri: str,
    heldout_uri: str,
    out_uri: str,
    progress: Callable[[str], None] = print,
) -> tuple[Any, dict[str, list[str]], Any, Any]:
    """(layout, steps per return weight, held-out logged decisions, song table)."""
    from rl.decision.observation import ObservationLayout
    from rl.experiments.compare_policies import write_feature_steps
    from rl.feedback.offline_steps_files import read_logged_decisions
    from rl.longterm.song_table import FEATURE_NAMES, SongTableConfig, fit_song_table
    from rl.songs.embedding import ensure_song_embedding

    embedding = ensure_song_embedding()
    k = _infer_k(log_uri)
    layout = ObservationLayout(
        k=k, latent_dim=embedding.latents.shape[1], song_feature_dim=len(FEATURE_NAMES)
    )
    progress(f"fitting the song table on {log_uri} (Ray Data); pool size k = {k} from the log")
    table = fit_song_table(log_uri, embedding.latents, embedding.track_ids, SongTableConfig())
    steps: dict[str, list[str]] = {}
    for weight in sorted(set(settings.return_weights)):
        progress(f"offline steps of the training log, return weight {weight:g}")
        steps[_weight_key(weight)] = write_feature_steps(
            log_uri, storage.join(out_uri, "steps", _weight_key(weight)), embedding, layout,
            table, weight if weight > 0 else None,
        )  # fmt: skip
    progress("offline steps of the held-out log (session reward: what the selection judges)")
    heldout_files = write_feature_steps(
        heldout_uri, storage.join(out_uri, "steps", "heldout"), embedding, layout, table
    )
    return layout, steps, read_logged_decisions(heldout_files, layout), table


def run_tuning(
    settings: TuneSettings,
    log_uri: str,
    heldout_uri: str,
    out_uri: str,
    progress: Callable[[str], None] = print,
) -> TuneReport:
    """The whole tuning run; needs a running Ray (the CLI starts a local one)."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    layout, steps, heldout, _ = prepare_data(settings, log_uri, heldout_uri, out_uri, progress)
    progress(
        f"{settings.trials} Ray Tune trials x {settings.iterations} iterations, selected on "
        f"the DR estimate on {len(heldout.rewards):,} held-out decisions"
    )
    trainable = tune.with_resources(
        tune.with_parameters(
            _run_trial,
            base=settings.base_train_config().to_dict(),
            steps=steps,
            layout_state=layout.to_dict(),
            heldout=heldout,
            work_uri=storage.join(out_uri, "runs"),
            bootstrap=settings.bootstrap,
            seed=settings.seed,
        ),
        {"cpu": settings.cpus_per_trial},
    )
    tune_dir = storage.resolve(storage.join(out_uri, "tune"))[1]
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(settings),
        tune_config=tune.TuneConfig(
            metric="dr",
            mode="max",
            num_samples=settings.trials,
            max_concurrent_trials=1,
            # One trial at a time: each trial's Ray Data reads need the CPUs the other
            # trials' reservations would hold (TuneConfig's limit alone did not hold).
            search_alg=BasicVariantGenerator(
                points_to_evaluate=[settings.default_point()],
                random_state=settings.seed,
                max_concurrent=1,
            ),
        ),
        run_config=tune.RunConfig(storage_path=tune_dir, name="encore-tune", verbose=0),
    )
    grid = tuner.fit()
    trials: list[TrialResult] = []
    for index in range(len(grid)):
        result = grid[index]
        if result.error is not None:
            raise RuntimeError(f"tuning trial {index} failed: {result.error}")
        metrics = result.metrics or {}
        sampled = result.config or {}
        point = {name: float(sampled[name]) for name in (*TUNED_FIELDS, "return_weight")}
        trials.append(
            TrialResult(
                trial_id=str(metrics.get("trial_id", index)),
                point=point,
                dr=float(metrics["dr"]),
                dr_low=float(metrics["dr_low"]),
                dr_high=float(metrics["dr_high"]),
                final_entropy=float(metrics["final_entropy"]),
                seconds=float(metrics["seconds"]),
            )
        )
        progress(f"  trial {index}: {_point_text(point)} -> DR {trials[-1].dr:.4f}")
    return write_report(settings, trials, log_uri, heldout_uri, out_uri)


def _point_text(point: dict[str, float]) -> str:
    return ", ".join(f"{name} {point[name]:.4g}" for name in (*TUNED_FIELDS, "return_weight"))


def write_report(
    settings: TuneSettings,
    trials: list[TrialResult],
    log_uri: str,
    heldout_uri: str,
    out_uri: str,
) -> TuneReport:
    """trials.csv, trials.md and chosen.json under ``out_uri``."""
    default_point = settings.default_point()
    defaults = next(
        (
            t
            for t in trials
            if all(np.isclose(t.point[name], default_point[name]) for name in default_point)
        ),
        None,
    )
    chosen = max(trials, key=lambda t: t.dr)
    beats = defaults is not None and chosen is not defaults and chosen.dr_low > defaults.dr
    chosen_json = {
        "chosen": {**chosen.point, "dr": chosen.dr, "dr_ci": [chosen.dr_low, chosen.dr_high]},
        "defaults": None
        if defaults is None
        else {**defaults.point, "dr": defaults.dr, "dr_ci": [defaults.dr_low, defaults.dr_high]},
        "chosen_is_defaults": chosen is defaults,
        "chosen_interval_above_defaults": bool(beats),
        "selected_on": "DR estimate of reward per decision on the held-out log",
        "log": log_uri,
        "heldout": heldout_uri,
        "settings": {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(settings).items()
        },
    }
    header = ["trial", *TUNED_FIELDS, "return_weight", "dr", "dr_low", "dr_high", "entropy", "s"]
    rows = [
        [t.trial_id, *[f"{t.point[n]:.6g}" for n in (*TUNED_FIELDS, "return_weight")],
         f"{t.dr:.5f}", f"{t.dr_low:.5f}", f"{t.dr_high:.5f}", f"{t.final_entropy:.4f}",
         f"{t.seconds:.0f}"]
        for t in sorted(trials, key=lambda t: -t.dr)
    ]  # fmt: skip
    csv = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    markdown = "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *[
                "| " + " | ".join(r) + (" | (defaults)" if trial is defaults else " |")
                for r, trial in zip(rows, sorted(trials, key=lambda t: -t.dr), strict=True)
            ],
        ]
    )
    storage.write_bytes(storage.join(out_uri, "trials.csv"), csv.encode("utf-8"))
    storage.write_bytes(storage.join(out_uri, "trials.md"), (markdown + "\n").encode("utf-8"))
    storage.write_bytes(
        storage.join(out_uri, "chosen.json"), json.dumps(chosen_json, indent=1).encode("utf-8")
    )
    return TuneReport(trials, chosen, defaults, chosen_json, out_uri)
