"""Parameters of the user simulator, one frozen and validated dataclass.

Units: utilities are logits (logistic noise of scale 1), distances are divided by the
corpus's latent scale (so the same numbers work for any embedding), probabilities are per
day unless said otherwise. The skip thresholds are fitted to the real MSSD skip shares by
``rl.simulator.calibration.calibrate_skip_thresholds``; the defaults come from that fit on
the real catalog with the VAE latents under the myopic logging policy.
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
    stickiness_mean: float = -3.2
    """Mean per-song stickiness logit: the base daily log-odds of returning to a known song."""
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
    activity_alpha: float = 1.2
    activity_beta: float = 5.0
    """Daily probability that a user opens a session ~ Beta(alpha, beta) per user (> 0 each)."""
    weekend_activity: float = 1.2
    """Multiplier of the activity probability on Saturday and Sunday. > 0."""
    churn_rate: float = 0.005
    """Fixed daily probability that a user deactivates for good. [0, 1)."""
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
    skip_thresholds: tuple[float, float, float] = field(default=(-1.11, -0.45, 0.35))
    """Utility cut points between immediate/early/late skip and played through (ordinal
    logit), increasing. Fitted to MSSD's skip shares (see module docstring)."""
    listen_fraction_edges: tuple[float, float, float] = field(default=(0.05, 0.35, 0.95))
    """Upper listen fraction of an immediate, early and late skip; played through = 1.0."""
    like_intercept: float = -2.6
    """Log-odds of a like for a played-through song at zero affinity."""
    like_bias_std: float = 0.7
    """Spread of the per-user like propensity. >= 0."""
    min_stream_seconds: float = 30.0
    """A play counts as a stream (listened, c > 0) from this many seconds. >= 0."""

    # -- sessions ----------------------------------------------------------------------
    continue_alpha: float = 8.0
    continue_beta: float = 2.0
    """Probability of one more song after each decision ~ Beta(alpha, beta) per user."""
    continue_after_immediate_skip: float = 0.7
    """Multiplier of the continue probability right after an immediate skip. (0, 1]."""
    max_session_length: int = 20
    """Hard cap on decisions per session (MSSD sessions have at most 20 tracks). >= 1."""
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
            "continue_alpha",
            "continue_beta",
            "weekend_activity",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.churn_rate < 1.0:
            raise ValueError(f"churn_rate must be in [0, 1), got {self.churn_rate}")
        if not 0.0 <= self.taste_drift < 1.0:
            raise ValueError(f"taste_drift must be in [0, 1), got {self.taste_drift}")
        if not 0.0 < self.continue_after_immediate_skip <= 1.0:
            raise ValueError(
                "continue_after_immediate_skip must be in (0, 1], "
                f"got {self.continue_after_immediate_skip}"
            )
        for name in ("library_size", "home_pool_size", "max_session_length", "history_length"):
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
