"""Storage checks of ``encore cluster validate``: each role's URI (catalog, logs, registry)
resolves, and exists (read-only roles) or takes a probe write (the others).

Part of ``rl.cluster.config_check.validate_deployment``; pure Python, nothing starts Ray.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping
from typing import Any

from rl import paths, storage


def check_storage_uri(uri: str, role: str, *, must_exist: bool, writable: bool) -> str | None:
    """Probe a storage location; return a clear problem line, or None if it is usable.

    ``must_exist``: the object/directory must already be there (the catalog);
    ``writable``: a probe object is written and removed (logs, registry), which is what
    proves an s3 bucket's credentials and permissions, not only that it resolves.
    """
    try:
        fs, path = storage.resolve(uri)
    except storage.StorageError as exc:
        return f"{role} URI {uri!r}: {exc}"
    try:
        info = fs.get_file_info(path)
    except Exception as exc:  # pyarrow raises OSError/ArrowInvalid with the network reason
        return f"{role} URI {uri!r} is unreachable: {exc}"
    from pyarrow.fs import FileType

    if must_exist and info.type == FileType.NotFound:
        return f"{role} URI {uri!r} does not exist"
    if writable:
        # A local probe creates the folders on its way; they are removed again, so that
        # checking a configuration leaves no empty data folders behind.
        created = _missing_local_folders(uri) if storage.is_local(uri) else []
        probe = storage.join(uri, f".encore-probe-{uuid.uuid4().hex[:8]}")
        try:
            storage.write_bytes(probe, b"ok")
            probe_fs, probe_path = storage.resolve(probe)
            probe_fs.delete_file(probe_path)
        except Exception as exc:
            return f"{role} URI {uri!r} is not writable: {exc}"
        finally:
            for folder in created:  # deepest first
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
    return None


def _missing_local_folders(uri: str) -> list[str]:
    """The folders from ``uri`` up that do not exist yet, deepest first."""
    missing = []
    folder = os.path.abspath(uri)
    while folder and not os.path.exists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def default_storage_uris() -> dict[str, str]:
    """The storage roles Encore needs and their default URIs (rl.paths, ENCORE_DATA)."""
    return {
        "catalog": paths.default_catalog_uri(),
        "logs": paths.default_log_uri(),
        "registry": paths.default_registry_uri(),
    }


def storage_uris_in_serve_config(config: Mapping[str, Any]) -> dict[str, str]:
    """URIs an application's ``args`` name: keys ending in ``uri`` or named after a role."""
    found = {}
    for app in config.get("applications") or []:
        for key, value in (app.get("args") or {}).items():
            if isinstance(value, str) and (
                key.endswith("uri") or key in ("catalog", "logs", "log", "registry")
            ):
                found[f"{app.get('name', 'default')}.{key}"] = value
    return found


_MUST_EXIST_ROLES = ("catalog", "embedding")


def check_storage(uris: Mapping[str, str]) -> list[str]:
    """Problems with each role -> URI; the catalog must exist, the rest must be writable."""
    problems = []
    for role, uri in uris.items():
        leaf = role.rsplit(".", 1)[-1]
        read_only = any(name in leaf for name in _MUST_EXIST_ROLES)
        problem = check_storage_uri(uri, role, must_exist=read_only, writable=not read_only)
        if problem:
            problems.append(problem)
    return problems
