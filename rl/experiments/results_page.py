"""One page of results: the latest output of each experiment command, gathered into a
single self-contained HTML file (tables, and plots embedded as data URIs).

Where it sits: ``encore report`` (rl/cli/report.py) calls ``write_results_page``. It reads
what the other commands already wrote, and runs nothing itself:

- policy comparison: ``encore compare-policies`` -> <data>/compare/<time>/comparison.md
- A/B test: ``encore ab-test`` -> <data>/reports/ab-test/report.md
- data efficiency: ``encore data-efficiency`` -> <data>/reports/data-efficiency/report.md
- simulator calibration: ``encore calibrate --out DIR`` -> <data>/reports/calibrat*/calibration.md
- log statistics: ``encore log-stats LOG`` -> <data>/reports/log_stats/<log>/log_stats.md
- benchmarks: ``make bench`` -> <data>/reports/benchmarks/bench_*.txt (each script's output)

Each command's report is markdown with PNG figures beside it; a section shows the newest
one found, converted to HTML (headings, paragraphs, lists, pipe tables, images), every PNG
of its folder the markdown does not show, where it came from, the command that makes it
(with the settings its output records, when it records them) and when it was written. A
section with no output says which command makes it. Pure Python: no Ray, no network. The
markdown-to-HTML converter is rl/experiments/markdown_html.py.
"""

from __future__ import annotations

import glob
import html
import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The markdown converter moved to rl/experiments/markdown_html.py; its names stay importable here.
from rl.experiments.markdown_html import (  # noqa: F401
    inline_html,
    markdown_to_html,
    png_data_uri,
)

RESULTS_FILE = "results.html"
"""The page's file name inside ``--out``."""


@dataclass(frozen=True)
class ResultSource:
    """Where one command's output lives and how to show it."""

    key: str
    """Short name (also the ``--use KEY=PATH`` key of ``encore report``)."""
    title: str
    command: str
    """The command that makes the output (shown, and named when it is missing)."""
    patterns: tuple[str, ...]
    """Globs, relative to the data directory, matching the output's main file."""
    kind: str = "markdown"
    """``markdown`` (a report.md with PNGs beside it) or ``text`` (captured stdout)."""
    newest_of_each: str = ""
    """"" shows the newest match only; "file" the newest of each file name (one per
    benchmark script); "folder" the newest of each folder name (one per log for log-stats)."""
    how_to_make: str = ""
    """The command line to suggest when there is no output (default: ``command``)."""


SOURCES: tuple[ResultSource, ...] = (
    ResultSource(
        "compare-policies",
        "Policy comparison (simulator and OPE)",
        "encore compare-policies",
        ("compare*/comparison.md", "compare*/*/comparison.md", "reports/compare*/**/comparison.md"),
    ),
    ResultSource(
        "ab-test", "Simulated A/B test", "encore ab-test", ("reports/ab-test/**/report.md",)
    ),
    ResultSource(
        "data-efficiency",
        "Data efficiency of the value estimators",
        "encore data-efficiency",
        ("reports/data-efficiency/**/report.md",),
    ),
    ResultSource(
        "calibrate",
        "Simulator calibration against real figures",
        "encore calibrate",
        ("reports/calibrat*/**/calibration.md", "calibrat*/**/calibration.md"),
        how_to_make="encore calibrate --out $ENCORE_DATA/reports/calibrate",
    ),
    ResultSource(
        "log-stats",
        "Listening behaviour of the logs",
        "encore log-stats",
        ("reports/log_stats/**/log_stats.md", "reports/log-stats/**/log_stats.md"),
        newest_of_each="folder",
        how_to_make="encore log-stats LOG (e.g. data/logs/sim)",
    ),
    ResultSource(
        "benchmarks",
        "Benchmarks",
        "make bench",
        ("reports/benchmarks/bench_*.txt",),
        kind="text",
        newest_of_each="file",
    ),
)


@dataclass(frozen=True)
class FoundOutput:
    source: ResultSource
    path: str
    """The main file (a report's markdown, a benchmark's captured output)."""
    written_at: float
    """Modification time (seconds since the epoch)."""
    command: str
    """The command line that made it, as far as the output records it."""


@dataclass
class ResultsPage:
    path: str
    found: list[FoundOutput] = field(default_factory=list)
    missing: list[ResultSource] = field(default_factory=list)


# -- finding the outputs ------------------------------------------------------------------
def find_outputs(
    source: ResultSource, data_dir: str, given: str | None = None
) -> list[FoundOutput]:
    """The newest output of ``source`` under ``data_dir`` (or at ``given``: a file or a
    folder holding one); for benchmarks, the newest capture of each script."""
    if given is not None:
        candidates = _files_at(given, source)
        if not candidates:
            raise FileNotFoundError(
                f"{given}: no output of `{source.command}` there "
                f"(expected {' or '.join(Path(p).name for p in source.patterns)})"
            )
    else:
        candidates = sorted(
            {
                path
                for pattern in source.patterns
                for path in glob.glob(os.path.join(data_dir, pattern), recursive=True)
                if os.path.isfile(path)
            }
        )
    if not candidates:
        return []
    newest_first = sorted(candidates, key=os.path.getmtime, reverse=True)
    if not source.newest_of_each:
        chosen = newest_first[:1]
    else:
        by_name: dict[str, str] = {}
        for path in newest_first:
            name = Path(path).name if source.newest_of_each == "file" else Path(path).parent.name
            by_name.setdefault(name, path)
        chosen = sorted(by_name.values())
    return [
        FoundOutput(source, path, os.path.getmtime(path), command_of(source, path))
        for path in chosen
    ]


def _files_at(given: str, source: ResultSource) -> list[str]:
    if os.path.isfile(given):
        return [given]
    if not os.path.isdir(given):
        return []
    names = {Path(p).name for p in source.patterns}
    found = [
        path
        for name in names
        for path in glob.glob(os.path.join(given, "**", name), recursive=True)
        if os.path.isfile(path)
    ]
    return sorted(set(found))


def command_of(source: ResultSource, path: str) -> str:
    """The command line that made ``path``: a ``command.txt`` beside it wins; else rebuilt
    from the settings the output records (compare-policies' comparison.json), else the
    command with the output folder it wrote."""
    folder = os.path.dirname(path)
    recorded = os.path.join(folder, "command.txt")
    if os.path.isfile(recorded):
        return Path(recorded).read_text().strip()
    if source.kind == "text":
        return f"python benchmarks/{Path(path).stem}.py  (via {source.command})"
    if source.key == "ab-test":
        # The report's first line states the run's settings ("Seed 0; 300 simulated users,
        # 25 days of logged history ... with a 10-day window"; older reports lack the window).
        text = Path(path).read_text(errors="replace")[:2000]
        stated = re.search(r"Seed (\d+); (\d+) simulated users, (\d+) days of logged history", text)
        if stated:
            seed, users, days = stated.groups()
            window = re.search(r"with a (\d+)-day window", text)
            window_flag = f" --window-days {window.group(1)}" if window else ""
            return (
                f"{source.command} --users {users} --history-days {days}{window_flag} "
                f"--seed {seed} --out {folder}"
            )
    if source.key == "calibrate":
        recorded_settings = _json(os.path.join(folder, "calibration.json"))
        if recorded_settings and "users" in recorded_settings:
            flags = [
                f"--{name} {recorded_settings[name]}"
                for name in ("users", "days", "seed")
                if name in recorded_settings
            ]
            return " ".join([source.command, *flags, f"--out {folder}"])
    if source.key == "log-stats":
        # Its notes name each log read: "- <name>: <log uri> (<engine>); discoveries ..."
        logs = re.findall(r"^- [^:\n]+: (\S+) \(", Path(path).read_text(errors="replace"), re.M)
        if logs:
            vs = "".join(f" --vs {log}" for log in logs[1:])
            return f"{source.command} {logs[0]}{vs} --out {folder}"
    if source.key == "compare-policies":
        settings = _json_field(os.path.join(folder, "comparison.json"), "settings")
        if settings:
            flags = [
                f"--{name.replace('_', '-')} {settings[name]}"
                for name in ("users", "days", "heldout_users", "eval_users", "eval_days", "seed")
                if name in settings
            ]
            train = settings.get("train") or {}
            if "iterations" in train:
                flags.append(f"--iterations {train['iterations']}")
            return " ".join([source.command, *flags, f"--out {folder}"])
    return f"{source.command} --out {folder}"


def _json(path: str) -> dict | None:
    try:
        with open(path) as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _json_field(path: str, name: str) -> dict | None:
    value = (_json(path) or {}).get(name)
    return value if isinstance(value, dict) else None


# -- the page -----------------------------------------------------------------------------
def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def render_output(found: FoundOutput) -> str:
    """One output as HTML: its report (images embedded) and the folder's other plots."""
    meta = (
        f'<p class="meta">Made by <code>{html.escape(found.command)}</code> '
        f"on {_when(found.written_at)}, from <code>{html.escape(found.path)}</code></p>"
    )
    text = Path(found.path).read_text(errors="replace")
    if found.source.kind == "text":
        return f"<h3>{html.escape(Path(found.path).stem)}</h3>{meta}<pre>{html.escape(text)}</pre>"
    folder = os.path.dirname(found.path)
    shown: set[str] = set()

    def image(alt: str, src: str) -> str:
        path = os.path.normpath(os.path.join(folder, src))
        if not src.lower().endswith(".png") or not os.path.isfile(path):
            return f'<span class="missing">[figure {html.escape(src)} not found]</span>'
        shown.add(path)
        return f'<img alt="{html.escape(alt)}" src="{png_data_uri(path)}">'

    body = markdown_to_html(text, image)
    extra = [
        path
        for path in sorted(glob.glob(os.path.join(folder, "*.png")))
        if os.path.normpath(path) not in shown
    ]
    figures = "".join(
        f'<figure><img alt="{html.escape(Path(p).stem)}" src="{png_data_uri(p)}">'
        f"<figcaption>{html.escape(Path(p).name)}</figcaption></figure>"
        for p in extra
    )
    return meta + body + figures


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1f;
background:#f7f7f4;margin:0;line-height:1.45}
header,main{max-width:70rem;margin:0 auto;padding:1rem}
header{border-bottom:1px solid #d5d5d0}
h1{font-size:1.5rem;margin:.2rem 0}
section{background:#fff;border:1px solid #d5d5d0;border-radius:8px;padding:1rem;margin:1rem 0}
h2{font-size:1.25rem;margin-top:0}
.meta,.missing,.muted{color:#4a4a55}
code{background:#eeeee9;padding:0 .2rem;border-radius:3px;overflow-wrap:anywhere}
.table{overflow-x:auto}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #d5d5d0;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eeeee9}
img{max-width:100%;height:auto}
figure{margin:1rem 0}
pre{background:#1b1b1f;color:#f0f0f0;padding:.75rem;overflow-x:auto;font-size:.8rem}
nav li{margin:.15rem 0}
"""


def build_results_page(
    data_dir: str, given: dict[str, str] | None = None, generated_at: float | None = None
) -> tuple[str, list[FoundOutput], list[ResultSource]]:
    """The page's HTML, the outputs shown and the sources with none."""
    given = given or {}
    unknown = set(given) - {s.key for s in SOURCES}
    if unknown:
        raise ValueError(
            f"unknown result kind(s) {sorted(unknown)}; use one of {[s.key for s in SOURCES]}"
        )
    found_all: list[FoundOutput] = []
    missing: list[ResultSource] = []
    sections: list[str] = []
    contents: list[str] = []
    for source in SOURCES:
        found = find_outputs(source, data_dir, given.get(source.key))
        anchor = source.key
        if found:
            found_all.extend(found)
            body = "".join(render_output(f) for f in found)
            status = f"{_when(max(f.written_at for f in found))}"
        else:
            missing.append(source)
            body = (
                f'<p class="missing">No output yet. Run '
                f"<code>{html.escape(source.how_to_make or source.command)}</code> "
                f"(this page looks for <code>{html.escape(', '.join(source.patterns))}</code> "
                f"under <code>{html.escape(data_dir)}</code>), then <code>encore report</code> "
                "again.</p>"
            )
            status = "not made yet"
        sections.append(
            f'<section id="{anchor}"><h2>{html.escape(source.title)}</h2>{body}</section>'
        )
        contents.append(
            f'<li><a href="#{anchor}">{html.escape(source.title)}</a> '
            f'<span class="muted">({html.escape(status)})</span></li>'
        )
    when = _when(generated_at if generated_at is not None else time.time())
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Encore results</title><style>{STYLE}</style></head><body>"
        f'<header><h1>Encore results</h1><p class="muted">Gathered by <code>encore report</code> '
        f"on {when} from <code>{html.escape(data_dir)}</code>: the newest output of each "
        f"command.</p><nav><ul>{''.join(contents)}</ul></nav></header>"
        f"<main>{''.join(sections)}</main></body></html>"
    )
    return page, found_all, missing


def write_results_page(
    out_dir: str, data_dir: str, given: dict[str, str] | None = None
) -> ResultsPage:
    """Write ``<out_dir>/results.html`` (atomically: a reader never sees half a page)."""
    page, found, missing = build_results_page(data_dir, given)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, RESULTS_FILE)
    handle, temporary = tempfile.mkstemp(prefix=".results-", suffix=".html", dir=out_dir)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(page)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide the page from others
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return ResultsPage(path, found, missing)


def parse_use(items: Sequence[str]) -> dict[str, str]:
    """``["ab-test=DIR", ...]`` -> ``{"ab-test": "DIR"}`` (``encore report --use``)."""
    given: dict[str, str] = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not key.strip() or not path.strip():
            raise ValueError(f"--use takes KIND=PATH, got {item!r}")
        given[key.strip()] = path.strip()
    return given
