"""`encore import-history` and `encore log-stats`: real listening histories in, and one
report of how listeners behave in any log.

encore import-history ../shared/data/histories/*.json --out data/logs/real
    reads Spotify (basic or extended), Last.fm, ListenBrainz or MSSD files into a new log
    (play rows + organic per-day sums), prints the summary (rows, users, days, catalog match
    rate, what was dropped and quarantined and why) and writes <out>/import_summary.json.
encore log-stats data/logs/real --vs data/logs/sim --out reports/behaviour
    prints the figures side by side and writes log_stats.md, log_stats.png, log_stats.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

from rl import paths, storage
from rl.cli.options import add_catalog_option, add_command

#: (key, label, format) rows of the printed and markdown table.
TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("users", "users", "{:,.0f}"),
    ("span_days", "days in the log", "{:,.0f}"),
    ("plays", "plays", "{:,.0f}"),
    ("sessions_per_active_day", "sessions per active day", "{:.2f}"),
    ("plays_per_session", "plays per session (mean)", "{:.1f}"),
    ("plays_per_session_median", "plays per session (median)", "{:.0f}"),
    ("single_play_session_share", "single-play sessions", "{:.0%}"),
    ("p_skip", "P(skip)", "{:.2f}"),
    ("p_skip_after_skip", "P(skip | previous skipped)", "{:.2f}"),
    ("p_skip_after_play", "P(skip | previous not skipped)", "{:.2f}"),
    ("active_days_per_user", "active days per user", "{:.1f}"),
    ("active_day_share", "active-day share", "{:.0%}"),
    ("plays_per_active_day", "plays per active day (mean)", "{:.1f}"),
    ("plays_per_active_day_median", "plays per active day (median)", "{:.0f}"),
    ("gap_days_mean", "days between active days (mean)", "{:.2f}"),
    ("gap_days_median", "days between active days (median)", "{:.0f}"),
    ("repeat_share", "repeat share (plays of a known track)", "{:.0%}"),
    ("stream_share", "stream share (>= 30 s)", "{:.0%}"),
    ("organic_share", "organic share", "{:.0%}"),
    ("recommended_share", "recommended share", "{:.0%}"),
    ("discoveries", "discoveries followed", "{:,.0f}"),
    ("return_days_mean", "return days in 59 days (mean)", "{:.2f}"),
    ("return_days_median", "return days (median)", "{:.0f}"),
    ("return_share_any", "discoveries ever returned to", "{:.0%}"),
    ("return_share_3plus", "discoveries with >= 3 return days", "{:.0%}"),
    ("return_days_p90", "return days (p90)", "{:.1f}"),
    ("organic_return_days_mean", "return days, organic streams only (mean)", "{:.2f}"),
)


def register(subparsers: Any) -> None:
    from rl.feedback.importers.history import FORMATS, ImportConfig

    defaults = ImportConfig()
    importer = add_command(subparsers, "import-history", run_import_history)
    importer.add_argument("paths", nargs="+", help="history files")
    importer.add_argument(
        "--format",
        default="auto",
        choices=("auto", *FORMATS),
        help="file format (default: by name/content)",
    )
    importer.add_argument("--out", required=True, help="new (absent or empty) log folder or URI")
    importer.add_argument(
        "--session-gap",
        type=float,
        default=defaults.session_gap_s / 60,
        help="minutes without a play that end a session (default %(default)g)",
    )
    importer.add_argument(
        "--user-name", default=defaults.user_name, help="pseudonym of a Spotify export's listener"
    )
    importer.add_argument(
        "--drop-incognito", action="store_true", help="drop private-session plays"
    )
    importer.add_argument(
        "--drop-duplicates", action="store_true", help="drop exact duplicate plays"
    )
    add_catalog_option(importer, " whose songs the plays are matched to")
    importer.add_argument(
        "--user-buckets",
        type=int,
        default=defaults.user_buckets,
        help="buckets of users spilled to disk and sessionised one at a time; more for "
        "histories with many users (default %(default)s)",
    )

    stats = add_command(subparsers, "log-stats", run_log_stats)
    stats.add_argument("log", help="log URI")
    stats.add_argument("--vs", default=None, help="a second log, shown beside the first")
    stats.add_argument(
        "--out",
        default=None,
        help="folder for log_stats.md/.png/.json (default: data/reports/log_stats/<log name>)",
    )
    stats.add_argument("--engine", default="auto", choices=("auto", "pandas", "ray"))
    stats.add_argument("--lead-days", type=int, default=30, help="discoveries count from this day")
    stats.add_argument(
        "--end-margin-days", type=int, default=60, help="... to this many days before the end"
    )
    stats.add_argument("--follow-days", type=int, default=59, help="return days followed")


def run_import_history(args: argparse.Namespace) -> int:
    """import real listening histories (Spotify, Last.fm, ListenBrainz, MSSD) into a log

    Read listening-history files into a new feedback log: one play row per play (sessions cut at
    --session-gap), the streams summed per user and day as organic rows, tracks matched to the
    catalog by Spotify id, else by normalised artist + title. Podcast episodes and audiobooks
    are dropped; user names, IP addresses, countries and platforms are never read. Rows that
    cannot be used go to <out>/quarantine with a reason.
    """
    from rl.feedback.importers.history import ImportConfig, import_history
    from rl.feedback.importers.tally import format_summary

    try:
        config = ImportConfig(
            session_gap_s=round(args.session_gap * 60),
            user_name=args.user_name,
            drop_incognito=args.drop_incognito,
            drop_duplicates=args.drop_duplicates,
            user_buckets=args.user_buckets,
        )
        summary = import_history(args.paths, args.out, args.format, config, args.catalog)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"import-history: {exc}") from exc
    print(format_summary(summary))
    print(f"log under {args.out}; summary in {storage.join(args.out, 'import_summary.json')}")
    return 0


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return fmt.format(value)


def markdown_table(columns: dict[str, dict[str, Any]]) -> str:
    names = list(columns)
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, label, fmt in TABLE_ROWS:
        label = label.replace("|", "\\|")
        lines.append(
            f"| {label} | " + " | ".join(_cell(columns[n].get(key), fmt) for n in names) + " |"
        )
    return "\n".join(lines)


def _label(log: str) -> str:
    return os.path.basename(log.rstrip("/")) or log


def _window_note(result: Any) -> str:
    window = result.window
    low, high = window.eligible
    where = f"{result.log} ({result.engine}, days {window.first_day}..{window.last_day})"
    if high < low:
        needed = window.lead_days + window.end_margin_days + 1
        return f"{where}; no discoveries followed: the log spans {window.span_days} days, {needed} needed"
    return f"{where}; discoveries = first streams on days {low}..{high}"


def run_log_stats(args: argparse.Namespace) -> int:
    """how listeners behave in a log (sessions, skips, activity, return days)

    Compute sessions, skips, activity, gaps, repeats, discoveries and their return days and
    organic vs recommended plays for a log (imported or simulated), optionally beside a second
    log; print them and write markdown, PNG and JSON.
    """
    from rl.evaluation.log_stats import log_stats

    options = dict(
        engine=args.engine,
        lead_days=args.lead_days,
        end_margin_days=args.end_margin_days,
        follow_days=args.follow_days,
    )
    try:
        results = [log_stats(args.log, **options)]
        if args.vs:
            results.append(log_stats(args.vs, **options))
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"log-stats: {exc}") from exc
    columns: dict[str, dict[str, Any]] = {}
    for result in results:
        name = _label(result.log)
        columns[name if name not in columns else result.log] = result.numbers
    table = markdown_table(columns)
    out = args.out or storage.join(paths.data_dir(), "reports", "log_stats", _label(args.log))
    storage.makedirs(out)
    notes = [f"- {name}: {_window_note(r)}" for name, r in zip(columns, results, strict=True)]
    storage.write_bytes(
        storage.join(out, "log_stats.md"),
        ("# Listening behaviour\n\n" + table + "\n\n" + "\n".join(notes) + "\n").encode("utf-8"),
    )
    storage.write_bytes(
        storage.join(out, "log_stats.json"),
        json.dumps(columns, indent=2, default=lambda v: None).encode("utf-8"),
    )
    if storage.is_local(out):
        plot_distributions(columns, os.path.join(out, "log_stats.png"))
    print(table)
    print("\n".join(notes))
    print(f"written: {out}/log_stats.md, log_stats.json, log_stats.png")
    return 0


def plot_distributions(columns: dict[str, dict[str, Any]], path: str) -> None:
    """Four panels, one line per log: session lengths, skip rate by position, gaps between
    active days, return days of discoveries."""
    import numpy as np

    from rl.figures import pyplot, save_figure

    figure, axes = pyplot().subplots(2, 2, figsize=(11, 7.5))
    panels = (  # (distribution, x label, y label, first and last x, normalise)
        ("session_length", "plays per session", "share of sessions", (1, 40), True),
        ("skip_rate_by_position", "position in session (20 = 20+)", "P(skip)", (0, 20), False),
        ("gap_days", "days between active days", "share of gaps", (1, 30), True),
        ("return_days", "return days in the 59 days after a discovery", "share of discoveries", (0, 59), True),
    )  # fmt: skip
    for axis, (key, xlabel, ylabel, (first, last), normalise) in zip(
        axes.flat, panels, strict=True
    ):
        for name, numbers in columns.items():
            distribution = np.asarray(numbers["distributions"][key], dtype=float)
            values = distribution[first : last + 1]
            if normalise:
                total = np.nansum(distribution)
                values = values / total if total else values
            axis.plot(
                np.arange(first, first + len(values)), values, marker="o", markersize=3, label=name
            )
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    axes.flat[0].legend()
    figure.suptitle("Listening behaviour per log")
    save_figure(figure, path)
