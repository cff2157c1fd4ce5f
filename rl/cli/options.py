"""Option helpers shared by the ``encore`` subcommands: renamed values, the registry.

``renamed_choice`` keeps old option values working after a rename (the reward names used
to be the labels of the project's two source documents, "seed1" and "longterm"): the old
value is mapped to the new one with a one-line notice on stderr.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

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


def add_embedding_option(
    parser: argparse.ArgumentParser, default: str = "the project's, trained on first use"
) -> None:
    """``--embedding``: the song VAE's folder URI (``default`` says what None means here)."""
    parser.add_argument(
        "--embedding", default=None, help=f"song embedding URI (default: {default})"
    )


def add_catalog_option(parser: argparse.ArgumentParser, use: str = "") -> None:
    """``--catalog``: the song catalog's parquet URI (``use``: what this command reads in it)."""
    from rl import paths

    parser.add_argument(
        "--catalog",
        default=None,
        help=f"catalog parquet URI{use} (default: the shared real catalog, "
        f"{paths.default_catalog_uri()})",
    )


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    description: str | None = None,
) -> argparse.ArgumentParser:
    """The subcommand ``name`` that runs ``run(args)``, documented by ``run``'s docstring:
    its first line is the one-line help of ``encore --help``, the paragraph after it the
    command's description. ``description`` (e.g. the command module's ``__doc__``, with
    its example lines) replaces that paragraph and is shown as written."""
    summary, _, details = inspect.cleandoc(run.__doc__ or "").partition("\n\n")
    kwargs: dict[str, Any] = {"help": " ".join(summary.split()).replace("%", "%%")}
    if description is not None:
        kwargs["description"] = description
        kwargs["formatter_class"] = argparse.RawDescriptionHelpFormatter
    elif details:
        kwargs["description"] = " ".join(details.split())
    parser = subparsers.add_parser(name, **kwargs)
    parser.set_defaults(func=run)
    return parser


def add_ray_cpus_option(
    parser: argparse.ArgumentParser, flag: str = "--num-cpus", default: int | None = 2
) -> None:
    """The CPUs of the local Ray runtime the command starts (None: Ray counts the machine's)."""
    shown = "the machine's" if default is None else default
    parser.add_argument(
        flag, type=int, default=default, help=f"CPUs of the local Ray runtime (default: {shown})"
    )


def dated_output(out: str | None, kind: str) -> str:
    """``--out`` when given, else a new folder ``<data>/<kind>/<YYYYmmdd-HHMMSS>``."""
    from rl import paths, storage

    return out or storage.join(paths.data_dir(), kind, time.strftime("%Y%m%d-%H%M%S"))


class ProgressPrinter:
    """A long command's progress lines, each after the seconds since it started
    (``[    12 s] message``); pass it where a ``progress(message)`` callback is taken."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, message: str) -> None:
        print(f"[{self.seconds:6.0f} s] {message}", flush=True)
