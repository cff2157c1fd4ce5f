"""``encore``: the one command-line entry point.

Each module in this package that defines ``register(subparsers)`` adds its subcommands;
``main`` discovers them, so a new capability adds a file here and nothing else.
Each subcommand sets ``func`` (taking the parsed args, returning an exit code). Modules
import their heavy dependencies (torch, Ray, pandas) inside the command functions, so
``encore --help`` stays fast.

One error path for every command: a ``CommandError`` (``rl.cli.errors``) prints
``encore COMMAND: error: ...`` plus what to do, and exits 2 without a traceback; Ctrl-C
exits 130 with the command's hint for a re-run; ``--verbose`` shows tracebacks and Ray's
own logs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback

from rl.cli.config_options import CommandParser, build_configs
from rl.cli.errors import CommandError
from rl.cluster.ray_runtime import VERBOSE_ENV

DESCRIPTION = """\
Encore: a long-term music recommender. Songs (11 Spotify audio features) are embedded by a
VAE, candidates retrieved by kNN, and ranked by an actor-critic policy trained offline with
PPO on RLlib from logged feedback, served with Ray Serve.

Run `encore COMMAND --help` for each command's options; add --verbose to any command for
Ray's own logs and full tracebacks."""


# Errors from the file system that name their path: a one-line answer is clearer than the
# traceback through Ray or pyarrow that leads to them.
_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="encore", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=CommandParser
    )
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):  # __main__ runs the CLI when imported
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    for command in subparsers.choices.values():
        _add_verbose(command)
    return parser


def _add_verbose(command: argparse.ArgumentParser) -> None:
    if "--verbose" in command._option_string_actions:
        return
    command.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's own logs and progress bars, and full tracebacks on errors",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = f"encore {args.command}"
    verbose = bool(getattr(args, "verbose", False))
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    try:
        build_configs(args)
        return int(args.func(args) or 0)
    except CommandError as exc:
        if verbose:
            traceback.print_exc()
        print(f"{prog}: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(exc.hint, file=sys.stderr)
        return exc.exit_code
    except _PATH_ERRORS as exc:
        if verbose:
            traceback.print_exc()
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"{prog}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        print("check the path (run with --verbose for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "interrupt_hint", None) or (
            "nothing was left in place half-written; run the same command again to start over"
        )
        print(f"\n{prog}: interrupted. {hint}", file=sys.stderr)
        return 130
    finally:
        if argv is None:  # the `encore` process: stop Ray here, where Ctrl-C is handled
            _stop_ray()


def _stop_ray() -> None:
    """Shut a Ray runtime this process started down; a Ctrl-C during it is not an error
    (the command's work is done), so no traceback from Ray's exit hook."""
    ray = sys.modules.get("ray")
    try:
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
