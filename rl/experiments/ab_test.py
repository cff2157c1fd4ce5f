"""Simulated A/B tests of the paper's arms (sections 5.1.3 banner and 5.1.4 shelf).

Where it sits: the end-to-end check of the long-term pipeline on the user simulator.

1. History: a population is simulated for ``history_days`` under the incumbent logging
   policy (``rl.decision.policies.MyopicListenPolicy``), written to a feedback log.
2. Models: ``pipeline.fit_longterm_models`` reads that log (Ray Data) and fits the
   relationship states, taste, discovery dataset, stickiness and clickiness.
3. Banner (5.1.3): every live user seen in the last week is assigned an arm at random and gets ONE
   recommendation of a song they never heard from their market's pool (each market a
   small editor-style pool of songs), picked by the arm's scorer; ``Simulator.recommend_once``
   follows it 60 days. Every arm's pick is computed for every user, so "impacted" users
   (not all arms agree) are known, as in the paper.
4. Shelf (5.1.4): from the same history (a copy of the simulator), each week every live
   user is shown a ranked shelf of unheard songs near their taste; card j is examined
   with a position-dependent probability; outcomes over ``shelf_weeks`` weeks.

Arms: control (clickiness), personalised (c·(1+⟨u,v⟩)), unpersonalised (c·(1+S_i)),
square-root (c·√S_i; for the shelf √⟨u,v⟩ as in 5.1.4), and optionally policy arms (any
``DecisionPolicy`` by arm name: the registry's production PPO, or PPO actor-critics trained
on this world's history log by ``ppo_arms``) that pick among the top-k of the pool by
clickiness (how each arm picks: rl/experiments/ab_picking.py). ``metrics`` computes the
per-arm tables; ``report`` writes them.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rl.config_checks import LOG_ENGINES, require_at_least, require_choice
from rl.decision.observation import ObservationLayout
from rl.decision.policies import (
    DecisionPolicy,
    ListenProbabilityModel,
    MyopicListenPolicy,
    latent_scale_of,
)
from rl.experiments.ab_picking import (
    PolicyArms,
    arm_rankings,
    candidate_batch,
    policy_arms,
    policy_entropy,
)
from rl.feedback.log import FeedbackLogWriter
from rl.longterm.fitted_models import LongTermModels, ModelConfig, fit_longterm_models
from rl.longterm.listen_days import listen_days_from_log
from rl.longterm.q_scoring import SCORER_NAMES, SquareRootScorer
from rl.longterm.taste import ActivityModel
from rl.simulator import Simulator, SimulatorConfig, build_corpus
from rl.simulator.user import library_slots
from rl.songs.retrieval import KnnIndex

BASE_ARMS = SCORER_NAMES


@dataclass(frozen=True)
class ABTestConfig:
    """Size and shape of the simulated experiments."""

    n_users: int = 20_000
    """Simulated population (history and experiments). >= 10."""
    history_days: int = 120
    """Days of logged history before the experiments (> horizon so discoveries exist)."""
    window_days: int = 60
    """Banner follow-up window, days (the paper's 60)."""
    n_markets: int = 12
    """Banner markets, each with its own pool of eligible songs (the paper had 12). >= 1."""
    pool_size: int = 40
    """Eligible songs per market (the paper: 3 to 74 hand-picked shows). >= 2."""
    shelf_weeks: int = 9
    """Shelf experiment length in weeks (the paper's nine). >= 8 for week-8 minutes."""
    shelf_size: int = 5
    """Cards per shelf. >= 1."""
    shelf_candidates: int = 50
    """Unheard songs nearest the user's taste that each shelf ranks (candidate generation)."""
    examine_probability: tuple[float, ...] = field(default=(0.6, 0.45, 0.2, 0.1, 0.05))
    """P(user looks at card j) each week; the first two cards are on screen. Each in [0, 1]."""
    lasting_min_days: int = 3
    """Lasting discovery: at least this many active days with the song within 6 weeks."""
    lasting_min_minutes: float = 10.0
    """... and at least this many minutes. The paper's 2 h is for podcasts (a few episodes);
    for ~3.6-min songs the default asks for ~3 full plays. Use 120 for the literal rule."""
    log_engine: str = "ray"
    """How the history log is read: "ray" (Ray Data) or "pyarrow" (in-process, small logs)."""
    run_shelf: bool = True
    """Also run the shelf experiment."""
    bootstrap: int = 500
    """Bootstrap resamples for intervals of medians and lifts. >= 50."""
    seed: int = 0
    """Seeds the simulator, arm assignment and everything random: same seed, same report."""
    models: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        require_at_least(self, 10, "n_users")
        if self.history_days <= self.models.horizon_days:
            raise ValueError(
                f"history_days ({self.history_days}) must exceed the stickiness horizon "
                f"({self.models.horizon_days}) so that discoveries with full windows exist"
            )
        require_at_least(self, 2, "window_days", "pool_size")
        require_at_least(self, 1, "n_markets")
        if self.run_shelf and self.shelf_weeks < 8:
            raise ValueError(f"shelf_weeks must be >= 8 (week-8 minutes), got {self.shelf_weeks}")
        if self.shelf_size < 1 or self.shelf_candidates < self.shelf_size:
            raise ValueError("need 1 <= shelf_size <= shelf_candidates")
        if len(self.examine_probability) < self.shelf_size or not all(
            0 <= p <= 1 for p in self.examine_probability
        ):
            raise ValueError("examine_probability needs shelf_size values in [0, 1]")
        require_choice(self, "log_engine", LOG_ENGINES)
        require_at_least(self, 50, "bootstrap")


@dataclass
class World:
    """The simulator after the history, its log and the models fitted on it."""

    simulator: Simulator
    log_uri: str
    models: LongTermModels
    layout: ObservationLayout


def build_world(
    latents: np.ndarray,
    track_ids: np.ndarray,
    config: ABTestConfig,
    work_uri: str,
    durations_s: np.ndarray | None = None,
    popularity: np.ndarray | None = None,
    simulator_config: SimulatorConfig | None = None,
    progress=None,
) -> World:
    """Simulate the history under the logging policy, then fit the long-term models."""
    rng = np.random.default_rng(config.seed)
    layout = ObservationLayout(latent_dim=latents.shape[1])
    sim_config = simulator_config or SimulatorConfig()
    corpus = build_corpus(latents, track_ids, layout.k, sim_config, rng, durations_s, popularity)
    logging_policy = MyopicListenPolicy(
        ListenProbabilityModel(layout, latent_scale_of(corpus.latents))
    )
    simulator = Simulator(
        corpus, config.n_users, logging_policy, layout, config=sim_config, seed=config.seed
    )
    log_uri = f"{work_uri}/history-log"
    with FeedbackLogWriter(log_uri) as writer:
        simulator.run(config.history_days, writer, on_day=progress)
    minutes = dict(zip(corpus.track_ids, corpus.durations_s / 60.0, strict=False))
    models = fit_longterm_models(
        log_uri, corpus.track_ids, corpus.latents, layout.betas, config.models,
        track_minutes=minutes, end_day=config.history_days, engine=config.log_engine,
    )  # fmt: skip
    return World(simulator, log_uri, models, layout)


def _run_logged(sim: Simulator, days: int, log_uri: str) -> None:
    with FeedbackLogWriter(log_uri) as writer:
        sim.run(days, writer)


def per_user_minutes(
    log_uri: str, sim: Simulator, start_day: int, n_days: int, bin_days: int
) -> pd.DataFrame:
    """Per user, minutes with everything in consecutive bins of ``bin_days`` from the log."""
    corpus = sim.corpus
    listen_days = listen_days_from_log(
        log_uri,
        track_minutes=dict(zip(corpus.track_ids, corpus.durations_s / 60.0, strict=False)),
        engine="pyarrow",
    )
    rel = listen_days.day - start_day
    keep = (rel >= 0) & (rel < n_days)
    frame = pd.DataFrame(
        {
            "user_id": listen_days.user_ids[listen_days.user[keep]],
            "bin": rel[keep] // bin_days,
            "minutes": listen_days.minutes[keep],
        }
    )
    return frame.groupby(["user_id", "bin"])["minutes"].sum().unstack(fill_value=0.0)


# ---------------------------------------------------------------------------------------
# Banner (5.1.3)
# ---------------------------------------------------------------------------------------
def run_banner(
    world: World,
    config: ABTestConfig,
    work_uri: str,
    ppo: DecisionPolicy | PolicyArms | None = None,
) -> pd.DataFrame:
    """One recommendation per live user, followed ``window_days``; one row per user."""
    sim, models = world.simulator, world.models
    rng = np.random.default_rng(config.seed + 1)
    scorers = models.scorers()
    policies = policy_arms(ppo)
    arms = list(scorers) + list(policies)
    users = np.flatnonzero(sim.state.alive)
    # The banner reaches users when they open the app: those seen in the last week's log.
    codes = pd.Index(models.listen_days.user_ids).get_indexer(sim.user_ids(users))
    recent = np.zeros(len(users), bool)
    recent[codes >= 0] = (
        ActivityModel(7)
        .fit(models.listen_days)
        .transform(codes[codes >= 0], np.full((codes >= 0).sum(), sim.day))
        > 0
    )
    users = users[recent]
    n_songs = len(models.track_ids)
    pools = np.stack(
        [rng.choice(n_songs, config.pool_size, replace=False) for _ in range(config.n_markets)]
    )
    market = rng.integers(0, config.n_markets, len(users))
    candidates = pools[market]
    hour = rng.integers(7, 23, len(users))
    batch = candidate_batch(world, users, candidates, hour)
    heard = batch.candidate_relationship.max(axis=-1) > 0
    known = library_slots(sim.state, users, candidates) >= 0  # also exclude unlogged knowledge
    mask = ~heard & ~known
    has_candidate = mask.any(axis=1)
    users, candidates, hour, mask, market = (
        users[has_candidate], candidates[has_candidate], hour[has_candidate], mask[has_candidate], market[has_candidate]
    )  # fmt: skip
    batch = candidate_batch(world, users, np.where(mask, candidates, -1), hour)
    rankings = arm_rankings(world, scorers, batch, policies)
    control_scores = scorers["control"].score(batch)
    entropies = {
        f"entropy_{name}": policy_entropy(policy, world, batch, control_scores)
        for name, policy in policies.items()
    }
    picks = {arm: candidates[np.arange(len(users)), rankings[arm][:, 0]] for arm in arms}
    assigned = rng.integers(0, len(arms), len(users))
    chosen = np.choose(assigned, [picks[arm] for arm in arms])
    base_picks = np.stack([picks[arm] for arm in BASE_ARMS], axis=1)
    impacted = (base_picks != base_picks[:, :1]).any(axis=1)

    rows = np.arange(len(users))
    chosen_index = (candidates == chosen[:, None]).argmax(axis=1)
    predicted_clickiness = control_scores[rows, chosen_index]
    predicted_personalised = models.stickiness.predict(batch.stickiness_features, chosen)
    predicted_unpersonalised = models.stickiness.predict_unpersonalised(chosen)
    start_day = sim.day
    recommendation = sim.recommend_once(users, chosen, window=config.window_days)
    followed = recommendation.followed
    day0_minutes = recommendation.stream_minutes  # the one-off stream is not in the log
    _run_logged(sim, config.window_days, f"{work_uri}/banner-log")
    outcomes = sim.followed_outcomes(followed)
    totals = per_user_minutes(
        f"{work_uri}/banner-log", sim, start_day, config.window_days, config.window_days
    )
    total = totals.sum(axis=1).reindex(outcomes["user_id"]).fillna(0.0).to_numpy() + day0_minutes
    return pd.DataFrame(
        {
            "user": users,
            "user_id": outcomes["user_id"],
            "arm": np.asarray(arms)[assigned],
            "market": market,
            "track_id": outcomes["track_id"],
            "impacted": impacted,
            "first_stream": outcomes["first_stream"].to_numpy(),
            "active_days": outcomes["active_days"].to_numpy(),
            "return_days": outcomes["return_days"].to_numpy(),
            "minutes": outcomes["minutes"].to_numpy(),
            "total_minutes": total,
            "true_stream_probability": outcomes["stream_probability"].to_numpy(),
            "predicted_clickiness": predicted_clickiness,
            "predicted_return_days": predicted_personalised,
            "predicted_return_days_unpersonalised": predicted_unpersonalised,
            **{f"pick_{arm}": models.track_ids[picks[arm]] for arm in arms},
            **entropies,
        }
    )


# ---------------------------------------------------------------------------------------
# Shelf (5.1.4)
# ---------------------------------------------------------------------------------------
def run_shelf(
    world: World,
    config: ABTestConfig,
    work_uri: str,
    ppo: DecisionPolicy | PolicyArms | None = None,
) -> pd.DataFrame:
    """A weekly shelf for ``shelf_weeks`` weeks; one row per user with weekly minutes etc."""
    sim, models = world.simulator, world.models
    rng = np.random.default_rng(config.seed + 2)
    all_scorers = models.scorers()
    scorers = {
        "control": all_scorers["control"],
        "personalised": all_scorers["personalised"],
        "square-root": SquareRootScorer(models.clickiness, models.stickiness, personalised=True),
    }
    policies = policy_arms(ppo)
    arms = list(scorers) + list(policies)
    users_all = np.arange(sim.n_users)
    assigned = rng.integers(0, len(arms), sim.n_users)
    index = KnnIndex(models.item_latents, models.track_ids)
    start_day = sim.day
    alive_at_start = sim.state.alive.copy()
    days = 7 * config.shelf_weeks
    unlogged = np.zeros(sim.n_users)
    for _week in range(config.shelf_weeks):
        users = users_all[sim.state.alive]
        if len(users):
            margin = sim.config.library_size
            near = index.query(sim.state.taste[users], k=config.shelf_candidates + margin).rows
            known = library_slots(sim.state, users, near) >= 0
            order = np.argsort(known, axis=1, kind="stable")[:, : config.shelf_candidates]
            candidates = np.where(
                np.take_along_axis(known, order, 1), -1, np.take_along_axis(near, order, 1)
            )
            batch = candidate_batch(world, users, candidates, rng.integers(7, 23, len(users)))
            rankings = arm_rankings(world, scorers, batch, policies)
            arm_of_user = assigned[users]
            shelf = np.zeros((len(users), config.shelf_size), np.int64)
            for index_arm, arm in enumerate(arms):
                rows = arm_of_user == index_arm
                shelf[rows] = np.take_along_axis(
                    candidates[rows], rankings[arm][rows, : config.shelf_size], 1
                )
            for card in range(config.shelf_size):
                look = (rng.random(len(users)) < config.examine_probability[card]) & (
                    shelf[:, card] >= 0
                )
                if look.any():
                    remaining = days - (sim.day - start_day)
                    recommendation = sim.recommend_once(
                        users[look], shelf[look, card], window=remaining
                    )
                    unlogged[users[look]] += recommendation.stream_minutes
        _run_logged(sim, 7, f"{work_uri}/shelf-log/week-{_week}")
        if _week == 5:  # end of week 6: the paper's discovery metrics window
            discoveries = shelf_discoveries(world, config, start_day)
    user_ids = sim.user_ids(users_all)
    weekly = sum(
        per_user_minutes(f"{work_uri}/shelf-log/week-{w}", sim, start_day, days, 7)
        .reindex(columns=range(config.shelf_weeks), fill_value=0.0)
        .reindex(user_ids, fill_value=0.0)
        for w in range(config.shelf_weeks)
    )
    frame = pd.DataFrame(
        {"user": users_all, "user_id": user_ids, "arm": np.asarray(arms)[assigned]}
    )
    for week in range(config.shelf_weeks):
        frame[f"week_{week + 1}_minutes"] = weekly[week].to_numpy()
    frame["week_1_minutes"] += unlogged  # coarse: the one-off streams' minutes, booked in week 1
    frame = frame.merge(discoveries, on="user_id", how="left").fillna(
        {"discovery_minutes": 0.0, "lasting_discoveries": 0}
    )
    frame["lasting_discovery"] = frame["lasting_discoveries"] > 0
    return frame[alive_at_start].reset_index(drop=True)


def shelf_discoveries(world: World, config: ABTestConfig, start_day: int) -> pd.DataFrame:
    """Per user, at the end of week 6: minutes with songs first heard in weeks 1-6, and
    lasting discoveries (>= ``lasting_min_days`` days and ``lasting_min_minutes`` minutes).

    Read from the simulator's library books (first-stream day, active days, minutes), which
    include the one-off shelf streams that the log does not hold.
    """
    sim = world.simulator
    outcomes = sim.item_outcomes()
    six_weeks_end = start_day + 42
    new = (outcomes["first_stream_day"] >= start_day) & (
        outcomes["first_stream_day"] < six_weeks_end
    )
    found = outcomes[new]
    lasting = (found["days_active"] >= config.lasting_min_days) & (
        found["minutes"] >= config.lasting_min_minutes
    )
    per_user = pd.DataFrame(
        {
            "user_id": sim.user_ids(found["user"].to_numpy()),
            "discovery_minutes": found["minutes"].to_numpy(),
            "lasting_discoveries": lasting.to_numpy().astype(int),
        }
    )
    return per_user.groupby("user_id", as_index=False).sum()


def run_ab_test(
    latents: np.ndarray,
    track_ids: np.ndarray,
    config: ABTestConfig,
    work_uri: str | None = None,
    durations_s: np.ndarray | None = None,
    popularity: np.ndarray | None = None,
    ppo: DecisionPolicy | PolicyArms | None = None,
    progress=None,
    train_policy_arms: Callable[[World, str], PolicyArms] | None = None,
) -> dict[str, object]:
    """History, models, banner and (optionally) shelf; returns the raw per-user frames.

    ``ppo``: a policy arm ("ppo") or several by name. ``train_policy_arms(world, work_uri)``
    runs after the history and may add arms trained on it (``ppo_arms.train_ppo_arms``).
    """
    work = work_uri or tempfile.mkdtemp(prefix="encore-ab-")
    world = build_world(
        latents, track_ids, config, work, durations_s, popularity, progress=progress
    )
    policies = policy_arms(ppo)
    if train_policy_arms is not None:
        policies.update(train_policy_arms(world, work))
    shelf_world = copy.deepcopy(world) if config.run_shelf else None
    banner = run_banner(world, config, work, policies)
    shelf = run_shelf(shelf_world, config, work, policies) if shelf_world is not None else None
    return {"world": world, "banner": banner, "shelf": shelf, "work_uri": work}
