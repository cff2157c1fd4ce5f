"""Range checks for the frozen config dataclasses' ``__post_init__``: one wording everywhere.

Every config refuses a bad value with ``ValueError("<field> must be <rule>, got <value>")``;
``encore`` turns that message into a usage error naming the option
(rl/cli/config_options.py), so the field's name must lead the message. These helpers write
that message once. Each comparison is written ``not value >= low`` so that NaN, which
compares false with everything, is refused too.

    def __post_init__(self) -> None:
        require_at_least(self, 1, "rounds", "users")
        require_positive(self, "lr")
        require_fraction(self, "epsilon")              # in [0, 1]
        require_choice(self, "log_engine", LOG_ENGINES)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

LOG_ENGINES = ("ray", "pyarrow")
"""How a log is read: Ray Data, or pyarrow in this process (small logs)."""


def _bound(value: float) -> str:
    return f"{value:g}"


def _fail(name: str, rule: str, value: Any) -> None:
    raise ValueError(f"{name} must be {rule}, got {value}")


def require_at_least(config: Any, low: float, *names: str) -> None:
    """Each named field ``>= low``."""
    for name in names:
        value = getattr(config, name)
        if not value >= low:
            _fail(name, f">= {_bound(low)}", value)


def require_positive(config: Any, *names: str) -> None:
    """Each named field ``> 0``."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            _fail(name, "> 0", value)


def require_range(
    config: Any,
    name: str,
    low: float,
    high: float,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """``low <= field <= high``; ``open_low`` / ``open_high`` make that end strict."""
    value = getattr(config, name)
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    if not (above and below):
        brackets = ("(" if open_low else "[", ")" if open_high else "]")
        _fail(name, f"in {brackets[0]}{_bound(low)}, {_bound(high)}{brackets[1]}", value)


def require_fraction(config: Any, *names: str) -> None:
    """Each named field in [0, 1] (a probability, a share, a discount)."""
    for name in names:
        require_range(config, name, 0.0, 1.0)


def require_choice(config: Any, name: str, allowed: Iterable[Any]) -> None:
    """The field is one of ``allowed`` (two: "must be 'a' or 'b'"; more: "one of (...)")."""
    allowed = tuple(allowed)
    value = getattr(config, name)
    if value not in allowed:
        if len(allowed) == 2:
            rule = f"{allowed[0]!r} or {allowed[1]!r}"
        else:
            rule = f"one of {allowed}"
        _fail(name, rule, repr(value))
