"""Option helpers shared by the ``encore`` subcommands.

``renamed_choice`` keeps old option values working after a rename (the reward names used
to be the labels of the project's two source documents, "seed1" and "longterm"): the old
value is mapped to the new one with a one-line notice on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

# The two rewards, named for what they count: the blog's per-decision listen reward over a
# session, and the paper's immediate reward plus λ x the days the user returned to the song.
SESSION_REWARD = "session"
RETURN_DAYS_REWARD = "return-days"
REWARDS = (SESSION_REWARD, RETURN_DAYS_REWARD)
OLD_REWARD_NAMES = {"seed1": SESSION_REWARD, "longterm": RETURN_DAYS_REWARD}


def renamed_choice(renamed: Mapping[str, str], option: str) -> Callable[[str], str]:
    """An argparse ``type`` that maps each old value in ``renamed`` to its new name."""

    def convert(value: str) -> str:
        if value in renamed:
            new = renamed[value]
            print(
                f"note: {option} {value} is now called {option} {new}; the old name is deprecated",
                file=sys.stderr,
            )
            return new
        return value

    return convert
