"""``encore report``: one HTML page with the newest results of every experiment command.

What it does: gathers the latest outputs of ``compare-policies``, ``ab-test``,
``data-efficiency``, ``calibrate``, ``log-stats`` and the benchmarks (``make bench``) from
the data directory into ``<out>/results.html``: their tables, their plots embedded, and
for each the command and date that produced it; a missing one names the command that
makes it. Runs nothing else and starts no Ray, so it takes about a second.

    encore report                      # -> data/reports/results.html
    encore report --out /tmp/site      # -> /tmp/site/results.html
    encore report --use compare-policies=data/compare-s0
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from rl import paths
from rl.cli.options import add_command


def register(subparsers: Any) -> None:
    default_out = os.path.join(paths.data_dir(), "reports")
    parser = add_command(subparsers, "report", run_report, description=__doc__)
    parser.add_argument(
        "--out", default=default_out, help=f"folder for results.html (default {default_out})"
    )
    parser.add_argument(
        "--data",
        default=paths.data_dir(),
        help=f"where the commands wrote their outputs (default {paths.data_dir()})",
    )
    parser.add_argument(
        "--use",
        action="append",
        default=[],
        metavar="KIND=PATH",
        help="take KIND's output from PATH (a report file or its folder) instead of the newest "
        "under --data; KIND is one of compare-policies, ab-test, data-efficiency, calibrate, "
        "log-stats, benchmarks; repeatable",
    )


def run_report(args: argparse.Namespace) -> int:
    """one HTML page with the newest results of every experiment command"""
    from rl.experiments.results_page import parse_use, write_results_page

    if not os.path.isdir(args.data):
        print(
            f"no data folder at {args.data}: run the experiment commands first "
            "(or point --data at where they wrote)",
            file=sys.stderr,
        )
        return 2
    try:
        given = parse_use(args.use)
    except ValueError as exc:
        print(f"encore report: {exc}", file=sys.stderr)
        return 2
    try:  # an unwritable --out is refused before anything is read
        os.makedirs(args.out, exist_ok=True)
        if not os.access(args.out, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as exc:
        print(f"encore report: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        page = write_results_page(args.out, args.data, given)
    except (ValueError, FileNotFoundError) as exc:
        print(f"encore report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"encore report: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for found in page.found:
        print(f"  {found.source.key:<17} {found.path}")
    for source in page.missing:
        print(f"  {source.key:<17} missing: run `{source.how_to_make or source.command}`")
    print(f"results: {page.path} ({len(page.found)} outputs, {len(page.missing)} missing)")
    return 0
