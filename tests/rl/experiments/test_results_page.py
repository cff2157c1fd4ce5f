"""``encore report``: the results page built from real outputs of the commands' own
writers (a data-efficiency study written by ``write_data_efficiency_report``, a real
benchmark run captured as ``make bench`` keeps it), the newest-output choice, the
missing-output answers, the markdown it converts, and the command's errors.

The slow test runs the real commands end to end (``ab-test``, ``data-efficiency --banner``
on its output, ``report``) at a tiny size.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rl.cli import main
from rl.experiments.results_page import (
    RESULTS_FILE,
    SOURCES,
    build_results_page,
    markdown_to_html,
    write_results_page,
)

PROJECT = Path(__file__).resolve().parents[3]


def _embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, trained_embedding) -> Path:
    """A data folder holding a real data-efficiency report and a real benchmark capture."""
    from rl.experiments.data_efficiency import MetaActionOutcomes, sample_size_study
    from rl.experiments.reports import write_data_efficiency_report

    data = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)

    def outcomes(name: str, engage: float) -> MetaActionOutcomes:
        engaged = rng.random(300) < engage
        item = np.where(engaged, rng.exponential(20.0, 300), 0.0)
        return MetaActionOutcomes(
            name, engaged, item, item + rng.exponential(500.0, 300), rng.exponential(20.0, 40)
        )

    a, b = outcomes("control", 0.2), outcomes("personalised", 0.3)
    study = sample_size_study(a, b, [50, 100, 200], seed=0)
    write_data_efficiency_report(
        study, str(data / "reports" / "data-efficiency"), a.name, b.name, {"control": 40}, 0
    )

    # A real benchmark, captured the way `make bench` keeps it.
    bench_data = tmp_path_factory.mktemp("bench-data")
    cache = os.environ.get("ENCORE_TEST_EMBEDDING") or str(
        tmp_path_factory.getbasetemp().parent / "encore-embedding"
    )
    os.symlink(cache, bench_data / "embedding")
    run = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_retrieval.py",
            "--single",
            "20",
            "--random-size",
            "2000",
        ],
        cwd=PROJECT,
        env={**os.environ, "ENCORE_DATA": str(bench_data)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    benchmarks = data / "reports" / "benchmarks"
    benchmarks.mkdir(parents=True)
    (benchmarks / "bench_retrieval.txt").write_text(run.stdout + "exit status 0\n")
    return data


def test_the_page_shows_each_output_with_its_tables_plots_command_and_date(data_dir, tmp_path):
    page = write_results_page(str(tmp_path / "site"), str(data_dir))
    assert page.path == str(tmp_path / "site" / RESULTS_FILE)
    assert sorted(f.source.key for f in page.found) == ["benchmarks", "data-efficiency"]
    html = Path(page.path).read_text()

    report = data_dir / "reports" / "data-efficiency" / "report.md"
    # The report's tables are HTML tables, with the report's own numbers.
    first_table_row = next(
        line for line in report.read_text().splitlines() if line.startswith("| ")
    )
    assert "<table>" in html and all(
        f"<th>{cell.strip()}</th>" in html for cell in first_table_row.strip("|").split("|")
    )
    holistic_row = next(line for line in report.read_text().splitlines() if "| holistic |" in line)
    assert all(f"<td>{c.strip()}</td>" in html for c in holistic_row.strip("|").split("|"))
    # Its plot is embedded byte for byte; nothing is loaded from elsewhere.
    plot = (report.parent / "data_efficiency.png").read_bytes()
    assert plot in _embedded_images(html)
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    # Command and date.
    written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.stat().st_mtime))
    assert f"<code>encore data-efficiency --out {report.parent}</code> on {written}" in html
    # The benchmark's own output, and the script that made it.
    assert "python benchmarks/bench_retrieval.py" in html
    assert "recall@k" in html and "sklearn KD-tree" in html


def test_missing_outputs_name_the_command_that_makes_them(data_dir):
    html, found, missing = build_results_page(str(data_dir))
    assert {s.key for s in missing} == {"compare-policies", "ab-test", "calibrate", "log-stats"}
    for source in missing:
        section = re.search(rf'<section id="{source.key}">(.*?)</section>', html, re.S).group(1)
        assert f"Run <code>{source.how_to_make or source.command}</code>" in section
    assert {s.key for s in SOURCES} == {s.key for s in missing} | {f.source.key for f in found}


def test_the_newest_output_is_shown(data_dir, tmp_path):
    import shutil

    older = tmp_path / "compare" / "20260101-000000"
    newer = tmp_path / "compare" / "20260102-000000"
    for folder, label in ((older, "older run"), (newer, "newer run")):
        folder.mkdir(parents=True)
        (folder / "comparison.md").write_text(f"# Comparison\n\nThe {label}.\n")
    shutil.copy(data_dir / "reports" / "data-efficiency" / "data_efficiency.png", newer)
    os.utime(older / "comparison.md", (time.time() - 3600,) * 2)
    html, found, _ = build_results_page(str(tmp_path))
    assert [f.path for f in found] == [str(newer / "comparison.md")]
    assert "newer run" in html and "older run" not in html
    # A figure beside the report that the report does not show is still on the page.
    assert (newer / "data_efficiency.png").read_bytes() in _embedded_images(html)
    # --use points a section at another output.
    html, found, _ = build_results_page(str(tmp_path), {"compare-policies": str(older)})
    assert "older run" in html and "newer run" not in html
    with pytest.raises(FileNotFoundError, match="no output of `encore compare-policies`"):
        build_results_page(str(tmp_path), {"compare-policies": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="unknown result kind"):
        build_results_page(str(tmp_path), {"comparisons": str(older)})


def test_markdown_conversion_escapes_and_keeps_structure():
    markdown = "\n".join(
        [
            "# Title <script>",
            "",
            "Text with `a < b` and **bold** and a [link](x.md).",
            "continued line.",
            "",
            "- one",
            "- two & three",
            "",
            "| a | b |",
            "|---|:---:|",
            "| 1 | <i>2</i> |",
            "| P(x | y) | a \\| b |",
            "",
            "![plot](plot.png)",
            "```",
            "x = <1>",
            "```",
        ]
    )
    images = []
    html = markdown_to_html(markdown, lambda alt, src: images.append((alt, src)) or "<img>")
    assert "<h3>Title &lt;script&gt;</h3>" in html
    assert (
        "<p>Text with <code>a &lt; b</code> and <strong>bold</strong> and a link. "
        "continued line.</p>" in html
    )
    assert "<ul><li>one</li><li>two &amp; three</li></ul>" in html
    assert "<thead><tr><th>a</th><th>b</th></tr></thead>" in html
    assert "<td>&lt;i&gt;2&lt;/i&gt;</td>" in html
    assert "<tr><td>P(x | y)</td><td>a | b</td></tr>" in html  # an unescaped and an escaped pipe
    assert images == [("plot", "plot.png")] and "<pre>x = &lt;1&gt;</pre>" in html


def test_encore_report_command(data_dir, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["report", "--out", str(out), "--data", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"results: {out / RESULTS_FILE} (2 outputs, 4 missing)" in printed
    assert "compare-policies  missing: run `encore compare-policies`" in printed
    assert oct((out / RESULTS_FILE).stat().st_mode & 0o777) != oct(0o600)
    assert [p.name for p in out.iterdir()] == [RESULTS_FILE]  # no temporary left behind


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["--data", "/nonexistent/encore"], 2, "no data folder at /nonexistent/encore"),
        (["--use", "ab-test"], 2, "--use takes KIND=PATH"),
        (["--use", "abtest=/tmp"], 2, "unknown result kind"),
        (["--use", "ab-test=/nonexistent"], 2, "no output of `encore ab-test`"),
        (["--out", "/proc/encore-report"], 1, "cannot write /proc/encore-report"),
    ],
)
def test_encore_report_mistakes_get_one_line(data_dir, capsys, argv, code, message):
    arguments = ["report", "--data", str(data_dir), *argv]
    assert main(arguments) == code
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error and len(error.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.ray
def test_report_of_real_commands_end_to_end(tmp_path, trained_embedding, tmp_path_factory):
    """ab-test -> data-efficiency on its banner, simulate -> log-stats, calibrate, then
    report: all real commands, at their smallest sizes."""
    cache = os.environ.get("ENCORE_TEST_EMBEDDING") or str(
        tmp_path_factory.getbasetemp().parent / "encore-embedding"
    )
    env = {**os.environ, "ENCORE_DATA": str(tmp_path)}
    encore = [sys.executable, "-m", "rl.cli"]

    def run(*argv: str, ok: tuple[int, ...] = (0,)) -> str:
        done = subprocess.run(
            [*encore, *argv], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode in ok, done.stderr[-3000:]
        return done.stdout

    run(
        "ab-test", "--users", "200", "--history-days", "15", "--window-days", "5", "--no-ppo",
        "--no-shelf", "--bootstrap", "50", "--log-engine", "pyarrow", "--embedding", cache,
        "--work-dir", str(tmp_path / "ab-work"),
    )  # fmt: skip
    banner = tmp_path / "reports" / "ab-test" / "banner_users.parquet"
    run("data-efficiency", "--banner", str(banner), "--auxiliary-fraction", "0.5")
    log = tmp_path / "logs" / "sim"
    run("simulate", "--users", "30", "--days", "3", "--out", str(log), "--embedding", cache)
    run("log-stats", str(log), "--engine", "pandas")
    # calibrate exits 1 when a target is outside its tolerance, likely at this size.
    calibration = tmp_path / "reports" / "calibrate"
    run(
        "calibrate", "--users", "100", "--days", "91", "--out", str(calibration),
        "--embedding", cache, ok=(0, 1),
    )  # fmt: skip
    printed = run("report")
    page = (tmp_path / "reports" / RESULTS_FILE).read_text()
    assert "(4 outputs, 2 missing)" in printed  # compare-policies (minutes) and make bench not run
    assert f"encore log-stats {log} --out {tmp_path / 'reports' / 'log_stats' / 'sim'}" in page
    assert f"encore calibrate --users 100 --days 91 --seed 1 --out {calibration}" in page
    assert (tmp_path / "reports" / "log_stats" / "sim" / "log_stats.png").read_bytes() in (
        _embedded_images(page)
    )
    assert "encore ab-test --users 200 --history-days 15 --window-days 5 --seed 0" in page
    for figure in ("banner_lifts.png", "calibration.png"):
        assert (tmp_path / "reports" / "ab-test" / figure).read_bytes() in _embedded_images(page)
    data_efficiency_plot = tmp_path / "reports" / "data-efficiency" / "data_efficiency.png"
    assert data_efficiency_plot.read_bytes() in _embedded_images(page)


def test_command_lines_are_rebuilt_from_what_each_output_records(tmp_path):
    """The settings lines below are in the formats the commands write (reports.py,
    calibrate.py, history.py, compare_policies.py); the slow test checks them for real."""
    import json

    from rl.experiments.results_page import command_of

    by_key = {source.key: source for source in SOURCES}

    def output(key: str, name: str, text: str, extra: dict[str, object] | None = None) -> str:
        folder = tmp_path / key
        folder.mkdir()
        for file_name, content in (extra or {}).items():
            (folder / file_name).write_text(json.dumps(content))
        (folder / name).write_text(text)
        return str(folder / name)

    ab = output(
        "ab-test",
        "report.md",
        "# A/B\n\nSeed 3; 200 simulated users, 15 days of logged history under the myopic "
        "logging policy, then the experiments with a 5-day window. Models fitted ...\n",
    )
    assert command_of(by_key["ab-test"], ab) == (
        f"encore ab-test --users 200 --history-days 15 --window-days 5 --seed 3 "
        f"--out {tmp_path / 'ab-test'}"
    )
    calibration = output(
        "calibrate", "calibration.md", "| target |\n|---|\n",
        {"calibration.json": {"users": 100, "days": 91, "seed": 1, "rows": []}},
    )  # fmt: skip
    assert command_of(by_key["calibrate"], calibration) == (
        f"encore calibrate --users 100 --days 91 --seed 1 --out {tmp_path / 'calibrate'}"
    )
    stats = output(
        "log-stats",
        "log_stats.md",
        "# Listening behaviour\n\n| figure | sim | real |\n|---|---|---|\n\n"
        "- sim: data/logs/sim (pandas); discoveries = first streams on days 30..40 of 0..99\n"
        "- real: data/logs/real (ray); discoveries = first streams on days 30..40 of 0..99\n",
    )
    assert command_of(by_key["log-stats"], stats) == (
        f"encore log-stats data/logs/sim --vs data/logs/real --out {tmp_path / 'log-stats'}"
    )
    compare = output(
        "compare-policies", "comparison.md", "# Comparison\n",
        {"comparison.json": {"settings": {"users": 500, "days": 20, "seed": 2, "train": {"iterations": 5}}}},
    )  # fmt: skip
    assert command_of(by_key["compare-policies"], compare) == (
        f"encore compare-policies --users 500 --days 20 --seed 2 --iterations 5 "
        f"--out {tmp_path / 'compare-policies'}"
    )
    (tmp_path / "compare-policies" / "command.txt").write_text("encore compare-policies --seed 9\n")
    assert command_of(by_key["compare-policies"], compare) == "encore compare-policies --seed 9"
