"""The errors a command raises to answer a user's mistake in a line or two.

``rl.cli.main`` prints ``encore COMMAND: error: <message>`` (and the hint, if any) on
stderr and exits 2, without a traceback: the message names the problem, the hint what to
do. ``UsageError`` is a bad option value (found before any work); ``CommandError`` a
problem with what the options point at (a missing path, the wrong kind of input, an
output that already holds data...).
"""

from __future__ import annotations


class CommandError(Exception):
    """A mistake the user can fix: ``message`` says what is wrong, ``hint`` what to do."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class UsageError(CommandError):
    """An option value the command refuses (out of range, wrong form)."""
