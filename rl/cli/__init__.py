"""``encore``: the one command-line entry point.

Each module in this package that defines ``register(subparsers)`` adds its subcommands;
``main`` discovers them, so a new capability adds a file here and nothing else.
Each subcommand sets ``func`` (taking the parsed args, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

DESCRIPTION = """\
Encore: a long-term music recommender. Songs (11 Spotify audio features) are embedded by a
VAE, candidates retrieved by kNN, and ranked by an actor-critic policy trained offline with
PPO on RLlib from logged feedback, served with Ray Serve.

Run `encore COMMAND --help` for each command's options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="encore", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):  # __main__ runs the CLI when imported
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
