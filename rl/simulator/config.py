"""Parameters of the user simulator, one frozen and validated dataclass.

Units: utilities are logits (logistic noise of scale 1), distances are divided by the
corpus's latent scale (so the same numbers work for any embedding), probabilities are per
day unless said otherwise. Six parameters are fitted to real figures by
``rl.simulator.calibration.calibrate_world`` (``encore calibrate --fit``; each field says
which figure): skip_thresholds, mood_feedback, session_length_mean, session_length_shape,
sessions_per_activity, stickiness_mean. The defaults come from that fit on the real
catalog with the VAE latents under the myopic logging policy (1,500 users x 100 days, 4
iterations, then 3 more after a library fix: ``encore calibrate --fit --iterations 3``). The others are assumptions without a real reference (the activity spread,
engagement and churn, the mood's persistence and start spread, quits after skip runs);
none was tuned to make any policy look better.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that shapes simulated listeners, songs and sessions."""

    # -- corpus (songs) ----------------------------------------------------------------
    clickiness_std: float = 0.6
    """Spread of the song-specific part of the clickiness logit (how likely a song is to be
    tried when recommended). >= 0."""
    clickiness_smooth_std: float = 0.5
    """Spread of the part of clickiness that varies smoothly over the latent space (a random
    linear direction: some sounds are more catchy than others), which is what reward
    propagation by clustering can recover. >= 0."""
    popularity_weight: float = 0.4
    """Clickiness logit added per standard deviation of catalog popularity. Any sign."""
    stickiness_mean: float = -3.28
    """Mean per-song stickiness logit: the base daily log-odds of returning to a known song.
    Fitted to the shared history's mean return days after a discovery (1.76), on the
    simulated look-alikes of its listener (rl/simulator/targets.py)."""
    stickiness_std: float = 0.9
    """Spread of the stickiness logit across songs. >= 0."""
    click_stick_correlation: float = -0.2
    """Correlation of the clickiness and stickiness draws, in [-1, 1]. Deliberately far from
    1: the songs users try most are not the ones they keep coming back to (the paper)."""
    neighbour_margin: int = 8
    """Extra neighbours kept per song beyond k, so songs already played in the session
    can be excluded by a table lookup. >= 0."""

    # -- users -------------------------------------------------------------------------
    taste_noise: float = 0.5
    """Taste = latent of a random anchor song + Gaussian noise of this many latent scales."""
    taste_drift: float = 0.02
    """Per day, taste moves this fraction toward the mean latent of the day's listens. [0, 1)."""
    activity_alpha: float = 0.55
    activity_beta: float = 0.9
    """Base daily probability that a user opens the app ~ Beta(alpha, beta) per user (> 0
    each). Both below 1: heavy-tailed activity, many users who come a few times a month and
    a minority of daily listeners (an assumption: no real figure of the population's
    spread is at hand; the shared history is one listener)."""
    weekend_activity: float = 1.2
    """Multiplier of the activity probability on Saturday and Sunday. > 0."""
    engagement_weight: float = 1.0
    """Activity log-odds gained per unit of engagement (the running mean of how satisfying
    the user's active days were, see ``engagement_rate``): what lets recommendations move
    active days. No real figure sets it; it is an assumption, never tuned to a policy. >= 0."""
    engagement_rate: float = 0.3
    """Weight of the latest active day in the engagement's running mean. (0, 1]."""
    like_satisfaction: float = 1.0
    """Satisfaction of a like, on top of the +1 of a stream (a skip counts -1). >= 0."""
    organic_satisfaction: float = 1.0
    """Satisfaction per organic stream (a song the user came back to on their own). >= 0."""
    bad_session_skips: int = 3
    """A session that ends right after this many skips in a row was a bad one. >= 1."""
    bad_session_penalty: float = 2.0
    """Satisfaction lost per bad session (on top of its skips). >= 0."""
    churn_rate: float = 0.0015
    """Daily probability that a user leaves for good at zero engagement. [0, 1)."""
    churn_engagement_weight: float = 1.5
    """The churn probability is multiplied by exp(-this x engagement): users whose days
    were unsatisfying leave sooner. >= 0."""
    user_bias_std: float = 0.6
    """Spread of the per-user listen-utility offset (skip-prone vs patient users). >= 0."""
    library_size: int = 64
    """Known songs tracked per user (relationship state, outcomes); when full, the song
    with the weakest long-memory state is forgotten. >= 1."""
    home_pool_size: int = 16
    """Songs nearest each user's taste from which sessions start. >= 1."""

    # -- responses to a recommendation -------------------------------------------------
    taste_weight: float = 1.6
    """Utility lost per squared latent-scale distance between taste and the song. >= 0."""
    flow_weight: float = 0.4
    """Utility lost per squared latent-scale distance from the current song. >= 0."""
    familiarity_weight: float = 1.0
    """Utility gained per unit of long-memory relationship state (known songs play). >= 0."""
    weekend_utility: float = 0.1
    """Utility offset on weekends (context effect)."""
    skip_thresholds: tuple[float, float, float] = field(default=(-0.816, 0.014, 1.025))
    """Utility cut points between immediate/early/late skip and played through (ordinal
    logit), increasing. Fitted to MSSD's skip shares (see module docstring); refitted per
    corpus and policy by ``build_simulator(calibrate=True)``."""
    listen_fraction_edges: tuple[float, float, float] = field(default=(0.05, 0.35, 0.95))
    """Upper listen fraction of an immediate, early and late skip; played through = 1.0."""
    like_intercept: float = -2.6
    """Log-odds of a like for a played-through song at zero affinity."""
    like_bias_std: float = 0.7
    """Spread of the per-user like propensity. >= 0."""
    min_stream_seconds: float = 30.0
    """A play counts as a stream (listened, c > 0) from this many seconds. >= 0."""

    # -- sessions ----------------------------------------------------------------------
    session_length_mean: float = 14.1
    """Mean of the plays a session is planned to last (1 + Poisson(Gamma)), before quits
    after skips cut it short. Fitted to the shared history's mean session length (9.8 plays
    at 30-min gaps). >= 1."""
    session_length_shape: float = 1.03
    """Gamma shape of the planned session length: larger = less spread. Fitted to the
    history's mean length of sessions of >= 10 plays capped at 20 (15.2). > 0."""
    quit_logit: float = -4.5
    """Log-odds of quitting the session after a track before its planned end."""
    skip_run_end_weight: float = 0.4
    """Log-odds of quitting added per skip in the current run of skips (skip_2 and below,
    MSSD's "played briefly"): sessions end early after runs of skips. >= 0."""
    sessions_per_activity: float = 2.14
    """Extra sessions on an active day ~ Poisson(this x base activity probability): daily
    listeners open several sessions a day. Fitted to the shared history (515 sessions on
    259 active days = 1.99 per active day for a 77%-active listener). >= 0."""
    session_gap_minutes: float = 150.0
    """Mean of the exponential gap between two sessions of a day, beyond the 30 minutes that
    separate sessions (the sessionisation gap of log-stats). Sessions that would start after
    midnight are dropped. > 0."""
    max_session_length: int = 80
    """Hard cap on decisions per session. >= 1."""
    mood_start_std: float = 0.5
    """Spread of the mood (a listen-utility offset, logits) a session starts in. >= 0."""
    mood_persistence: float = 0.75
    """Share of the mood carried to the next track. [0, 1)."""
    mood_feedback: float = 0.48
    """Mood gained after a track played beyond skip_2 and lost after a skip_2-or-shorter
    skip: the pick repairs or worsens the mood, so skips come in runs. Fitted to MSSD's
    P(skip_2 | previous skip_2) - P(skip_2 | previous not). >= 0."""
    history_length: int = 8
    """Songs of the session excluded from the candidates (no immediate repeats). >= 1."""

    # -- organic returns to known songs ------------------------------------------------
    organic_bias_std: float = 0.5
    """Spread of the per-user organic-return offset. >= 0."""
    habit_weights: tuple[float, ...] = field(default=(1.0, 0.8, 1.2, 2.5))
    """Return logit gained per unit of relationship state, one per forgetting factor."""
    organic_taste_weight: float = 0.5
    """Return logit lost per squared latent-scale distance from the taste. >= 0."""
    organic_streams_mean: float = 0.6
    """Extra streams on a return day ~ Poisson(this). >= 0."""

    def __post_init__(self) -> None:
        for name in (
            "clickiness_std", "clickiness_smooth_std", "stickiness_std", "taste_noise", "user_bias_std", "taste_weight",
            "flow_weight", "familiarity_weight", "like_bias_std", "min_stream_seconds",
            "organic_bias_std", "organic_taste_weight", "organic_streams_mean",
            "engagement_weight", "like_satisfaction", "organic_satisfaction",
            "bad_session_penalty", "churn_engagement_weight", "skip_run_end_weight",
            "sessions_per_activity", "mood_start_std", "mood_feedback",
        ):  # fmt: skip
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if not -1.0 <= self.click_stick_correlation <= 1.0:
            raise ValueError(
                f"click_stick_correlation must be in [-1, 1], got {self.click_stick_correlation}"
            )
        for name in (
            "activity_alpha",
            "activity_beta",
            "session_length_shape",
            "weekend_activity",
            "session_gap_minutes",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.churn_rate < 1.0:
            raise ValueError(f"churn_rate must be in [0, 1), got {self.churn_rate}")
        if not 0.0 <= self.taste_drift < 1.0:
            raise ValueError(f"taste_drift must be in [0, 1), got {self.taste_drift}")
        if not self.session_length_mean >= 1.0:
            raise ValueError(f"session_length_mean must be >= 1, got {self.session_length_mean}")
        if not 0.0 < self.engagement_rate <= 1.0:
            raise ValueError(f"engagement_rate must be in (0, 1], got {self.engagement_rate}")
        if not 0.0 <= self.mood_persistence < 1.0:
            raise ValueError(f"mood_persistence must be in [0, 1), got {self.mood_persistence}")
        for name in (
            "library_size", "home_pool_size", "max_session_length", "history_length",
            "bad_session_skips",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.neighbour_margin < 0:
            raise ValueError(f"neighbour_margin must be >= 0, got {self.neighbour_margin}")
        thresholds = self.skip_thresholds
        if len(thresholds) != 3 or not thresholds[0] < thresholds[1] < thresholds[2]:
            raise ValueError(f"skip_thresholds must be 3 increasing values, got {thresholds}")
        edges = self.listen_fraction_edges
        if len(edges) != 3 or not 0.0 < edges[0] < edges[1] < edges[2] <= 1.0:
            raise ValueError(
                f"listen_fraction_edges must be 3 increasing values in (0, 1], got {edges}"
            )

    def replace(self, **changes: Any) -> SimulatorConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> SimulatorConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in state.items()
            if key in fields
        }
        return cls(**values)
