"""Option helpers shared by the ``encore`` subcommands: renamed values, the registry.

``renamed_choice`` keeps old option values working after a rename (the reward names used
to be the labels of the project's two source documents, "seed1" and "longterm"): the old
value is mapped to the new one with a one-line notice on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from rl.cli.errors import CommandError

if TYPE_CHECKING:
    from rl.registry import ModelRegistry

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


def add_registry_option(parser: argparse.ArgumentParser) -> None:
    """``--registry``: the model registry's URI (local folder or s3://...)."""
    from rl import paths

    parser.add_argument(
        "--registry",
        default=None,
        help=f"model registry URI (default: {paths.default_registry_uri()}; s3://... works)",
    )


def registry_from(args: argparse.Namespace, must_exist: bool = False) -> ModelRegistry:
    """The registry of ``--registry``; with ``must_exist``, a missing one is a CommandError
    (reading a registry that is not there is a typo, not an empty registry)."""
    from rl import paths, storage
    from rl.registry import ModelRegistry

    uri = args.registry or paths.default_registry_uri()
    if must_exist and not storage.exists(uri):
        raise CommandError(
            f"no model registry at {uri} (--registry)",
            "train a version first (`encore train`), or point --registry at an existing one",
        )
    return ModelRegistry(uri)


def add_torch_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads of the local learner (default: 1: with Ray's data "
        "workers on a few cores, more threads oversubscribe them and run ~5x slower)",
    )
