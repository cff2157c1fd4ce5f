"""Storage locations as URIs, resolved through pyarrow filesystems.

Every path Encore reads or writes (catalog, logs, checkpoints, registry) goes through
here, so a local path works on one machine and ``s3://bucket/prefix`` (or any filesystem
pyarrow knows) works on a cluster without a code change.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from typing import Any

import pyarrow.fs as pafs


class StorageError(RuntimeError):
    """A storage URI could not be resolved or reached."""


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path)`` for a URI or a local path (made absolute)."""
    if is_local(uri):
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises several types for a bad scheme/host
        raise StorageError(f"cannot resolve storage URI {uri!r}: {exc}") from exc


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI or local path."""
    if is_local(uri):
        return os.path.join(uri, *parts)
    return posixpath.join(uri, *parts)


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def makedirs(uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError as exc:
        raise StorageError(f"not found: {uri}") from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object. On a local disk the write is atomic (temp file + rename)."""
    fs, path = resolve(uri)
    parent = posixpath.dirname(path) if not is_local(uri) else os.path.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return
    # Object stores (S3, GCS) make a single PUT visible atomically.
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri).decode("utf-8"))


def write_json(uri: str, value: Any) -> None:
    write_bytes(uri, json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))


def read_torch(uri: str) -> Any:
    import torch

    return torch.load(io.BytesIO(read_bytes(uri)), map_location="cpu", weights_only=False)


def write_torch(uri: str, value: Any) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    write_bytes(uri, buffer.getvalue())


def list_dir(uri: str) -> list[str]:
    """Names (not paths) of the entries directly under a directory URI; [] if absent."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(posixpath.basename(info.path) for info in infos)
