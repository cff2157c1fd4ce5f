"""Checks of what a command's options point at, made before any long work starts.

Inputs: ``require_log`` (a decision log) and ``require_offline_steps`` (RLlib offline steps)
tell apart a missing path, the other kind of data (a decision log where steps are expected,
the mistake ``encore train --data <simulate log>`` made easy), an empty folder and an
interrupted write, each with what to run instead.

Outputs: ``require_new_output`` refuses a folder that already holds data (writing into it
would mix two runs: doubled rows, merged sessions), ``require_writable`` fails in a second
instead of after the work, and ``fresh_output`` writes into a hidden folder beside the
target and moves it into place only when the command finishes, so Ctrl-C never leaves a
half-written output that a later command would accept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator

from rl import storage
from rl.cli.errors import CommandError

LAYOUT_FILE = "_layout.json"  # rl.feedback.offline_steps.LAYOUT_FILE, without its imports
DECISION_LOG_MARKERS = ("decisions", "summary.json")
PARTIAL_PREFIX = ".partial-"


def _exists(uri: str) -> bool:
    return storage.exists(uri)


def _is_decision_log(uri: str) -> bool:
    return any(_exists(storage.join(uri, name)) for name in DECISION_LOG_MARKERS)


def require_path(uri: str, option: str, hint: str | None = None) -> str:
    """``uri`` exists, or ``CommandError`` naming the option."""
    if not _exists(uri):
        raise CommandError(f"{uri} does not exist ({option})", hint)
    return uri


def log_days(log_uri: str) -> list[int]:
    """The days present in a decision log (its ``decisions/day=N`` folders)."""
    days = []
    for name in storage.list_dir(storage.join(log_uri, "decisions")):
        if name.startswith("day="):
            try:
                days.append(int(name[4:]))
            except ValueError:
                continue
    return sorted(days)


def require_log(uri: str, option: str = "--log") -> str:
    """``uri`` is a decision log (``<log>/decisions/...``), or ``CommandError``."""
    if not _exists(uri):
        raise CommandError(
            f"no decision log at {uri} ({option})",
            "make one with `encore simulate --out DIR` or `encore import-mssd --out DIR`",
        )
    if _exists(storage.join(uri, LAYOUT_FILE)):
        raise CommandError(
            f"{uri} holds offline steps, not a decision log ({option})",
            "pass the log the steps were made from (the --log of `encore offline-steps`)",
        )
    decisions = storage.join(uri, "decisions")
    if not _exists(decisions) or not _parquet_under(decisions):
        raise CommandError(
            f"{uri} holds no logged decisions ({option}: expected {decisions}/day=N/*.parquet)",
            "point it at the --out of `encore simulate` / `encore import-mssd` or the service's log",
        )
    return uri


def _parquet_under(uri: str) -> list[str]:
    from rl.feedback.offline_steps_files import parquet_files

    try:
        return parquet_files(uri)
    except FileNotFoundError:
        return []


def require_offline_steps(uri: str, option: str = "--data") -> list[str]:
    """The parquet files of the offline steps at ``uri``, or ``CommandError`` naming what
    is there instead (nothing, a decision log, no rows, a truncated file)."""
    import pyarrow.parquet as pq

    if not _exists(uri):
        raise CommandError(
            f"no offline steps at {uri} ({option})",
            f"make them from a decision log: encore offline-steps --log LOG --out {uri}",
        )
    if _is_decision_log(uri):
        raise CommandError(
            f"{uri} is a decision log, not offline steps ({option})",
            f"convert it first: encore offline-steps --log {uri} --out STEPS, then {option} STEPS",
        )
    files = _parquet_under(uri)
    if not files:
        raise CommandError(
            f"{uri} holds no parquet files ({option})",
            "point it at the --out of `encore offline-steps`",
        )
    for path in files:
        try:
            schema = pq.read_schema(storage.resolve(path)[1], filesystem=storage.resolve(path)[0])
        except Exception as exc:  # pyarrow's ArrowInvalid: a truncated or foreign file
            raise CommandError(
                f"{path} is not a complete parquet file ({type(exc).__name__}); "
                "was the command that wrote it interrupted?",
                f"delete {uri} and make it again with `encore offline-steps`",
            ) from None
        if "eps_id" not in schema.names:
            raise CommandError(
                f"{path} is not offline steps (no eps_id column; it has "
                f"{', '.join(schema.names[:6])}...) ({option})",
                "convert a decision log with `encore offline-steps` first",
            )
    return files


def require_new_output(uri: str, option: str = "--out") -> str:
    """``uri`` does not exist or is an empty folder, or ``CommandError``."""
    if storage.is_local(uri) and os.path.isfile(uri):
        raise CommandError(f"{uri} is a file; {option} needs a folder", f"choose another {option}")
    if storage.list_dir(uri):
        raise CommandError(
            f"{uri} already holds data ({option}); writing into it would mix two runs",
            f"choose a new {option}, or delete {uri} first",
        )
    return uri


def require_writable(uri: str, option: str = "--out") -> str:
    """A local ``uri`` can be created and written to (probed, then tidied), or
    ``CommandError``; remote URIs are left to the store."""
    if not storage.is_local(uri):
        return uri
    path = os.path.abspath(uri)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if os.path.exists(path) and not os.path.isdir(path):
        raise CommandError(f"{uri} is a file; {option} needs a folder", f"choose another {option}")
    if not os.path.isdir(existing):
        raise CommandError(f"cannot create {uri}: {existing} is a file ({option})")
    created = []
    try:
        probe_dir = path
        missing = []
        while not os.path.exists(probe_dir):
            missing.append(probe_dir)
            probe_dir = os.path.dirname(probe_dir)
        for folder in reversed(missing):
            os.mkdir(folder)
            created.append(folder)
        probe = os.path.join(path, f".encore-write-probe-{uuid.uuid4().hex}")
        with open(probe, "wb") as handle:
            handle.write(b"x")
        os.remove(probe)
    except OSError as exc:
        raise CommandError(
            f"cannot write to {uri} ({option}): {exc.strerror or exc}",
            f"choose a {option} you can write to",
        ) from None
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
    return uri


@contextlib.contextmanager
def fresh_output(uri: str, option: str = "--out") -> Iterator[str]:
    """Yield a place to write ``uri``'s contents; on success it becomes ``uri``.

    Local: a hidden sibling folder, renamed onto ``uri`` at the end (an empty ``uri``
    folder is replaced) and deleted on any error or Ctrl-C. Remote: ``uri`` itself after
    ``require_new_output`` (object stores have no rename)."""
    require_new_output(uri, option)
    if not storage.is_local(uri):
        yield uri
        return
    require_writable(uri, option)
    target = os.path.abspath(uri)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    partial = os.path.join(parent, f"{PARTIAL_PREFIX}{os.path.basename(target)}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        yield partial
        if os.path.isdir(target):
            os.rmdir(target)  # empty (checked above); a file placed there meanwhile fails here
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
