"""TrainConfig: every hyper-parameter of one offline training run, validated and frozen.

The CLI builds it from flags, ``train.py`` turns it into an RLlib config, and the model
registry stores it with the checkpoint it produced (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rl.config_checks import (
    require_at_least,
    require_choice,
    require_fraction,
    require_positive,
    require_range,
)

# The actor-critic's default trunk; here, not in module.py, so that reading a config (the CLI
# builds its options from it) does not import torch and RLlib.
DEFAULT_HIDDEN_SIZES: tuple[int, ...] = (128, 128)

ALGORITHMS = ("offline-ppo", "marwil", "bc")


@dataclass(frozen=True)
class TrainConfig:
    algo: str = "offline-ppo"
    """offline-ppo (our learner), marwil or bc (RLlib's own, as baselines)."""
    iterations: int = 20
    """Training iterations (RLlib ``train()`` calls); each runs ``updates_per_iteration``
    minibatch updates."""
    lr: float = 3e-4
    """Adam learning rate; 1e-4..1e-3 works for the default model."""
    gamma: float = 0.9
    """Discount per decision within a session, in [0, 1]."""
    lambda_: float = 0.95
    """GAE lambda in [0, 1] (offline PPO; MARWIL uses 1.0 = Monte-Carlo returns)."""
    clip: float = 0.2
    """PPO's clip epsilon on the importance ratio, in (0, 1)."""
    vf_coeff: float = 0.5
    """Weight of the value loss, >= 0."""
    entropy_coeff: float = 0.01
    """Weight of the entropy bonus, >= 0."""
    normalize_advantages: bool = True
    """Standardise advantages per minibatch (offline PPO)."""
    marwil_beta: float = 1.0
    """MARWIL's advantage temperature in (0, 1] (ignored by the other algorithms)."""
    grad_clip: float | None = 1.0
    """Global gradient-norm clip, or None."""
    hidden_sizes: tuple[int, ...] = field(default=DEFAULT_HIDDEN_SIZES)
    """Hidden layer widths of the actor's candidate scorer and of the critic."""
    train_batch_size: int = 512
    """Decisions per minibatch update (per learner)."""
    updates_per_iteration: int = 10
    """Minibatch updates per iteration (per learner)."""
    sessions_per_read_batch: int = 32
    """Sessions decoded per Ray Data pre-learner call."""
    num_learners: int = 0
    """0 = learn in the driver process; N > 0 = N remote learner actors (a cluster)."""
    custom_resources_per_learner: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each remote learner asks for, e.g. ``{"encore_learner": 1}``
    so learners land on the cluster's train workers (cluster.yaml); amounts > 0."""
    checkpoint_every: int = 5
    """Save a resumable checkpoint every N iterations (and after the last one), >= 1."""
    seed: int = 0
    """Seed of RLlib, torch and numpy."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(
            self,
            "custom_resources_per_learner",
            {str(k): float(v) for k, v in dict(self.custom_resources_per_learner).items()},
        )
        require_choice(self, "algo", ALGORITHMS)
        require_at_least(self, 1, "iterations", "updates_per_iteration", "sessions_per_read_batch")
        require_at_least(self, 1, "checkpoint_every")
        require_at_least(self, 2, "train_batch_size")
        require_at_least(self, 0, "vf_coeff", "entropy_coeff", "num_learners")
        require_positive(self, "lr")
        require_fraction(self, "gamma", "lambda_")
        require_range(self, "clip", 0.0, 1.0, open_low=True, open_high=True)
        require_range(self, "marwil_beta", 0.0, 1.0, open_low=True)
        if self.grad_clip is not None:
            require_positive(self, "grad_clip")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}")
        if not all(v > 0 for v in self.custom_resources_per_learner.values()):
            raise ValueError(
                "custom_resources_per_learner amounts must be > 0, got "
                f"{self.custom_resources_per_learner}"
            )

    def to_dict(self) -> dict[str, Any]:
        state = asdict(self)
        state["hidden_sizes"] = list(self.hidden_sizes)
        state["custom_resources_per_learner"] = dict(self.custom_resources_per_learner)
        return state

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in known})
