"""gRPC messages and service stubs, generated from ``encore.proto`` on first import.

The generated ``encore_pb2.py`` / ``encore_pb2_grpc.py`` are git-ignored: importing this
package runs ``grpc_tools.protoc`` when they are missing or older than the .proto. Files
are generated in a temporary directory and moved in atomically, so Serve replicas that
import at the same time never read a half-written module. Import them as
``from services.proto import encore_pb2, encore_pb2_grpc``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO_FILE = PROTO_DIR / "encore.proto"
GENERATED = ("encore_pb2.py", "encore_pb2_grpc.py")


def _stale() -> bool:
    source_mtime = PROTO_FILE.stat().st_mtime
    return any(
        not (PROTO_DIR / name).exists() or (PROTO_DIR / name).stat().st_mtime < source_mtime
        for name in GENERATED
    )


def generate(force: bool = False) -> None:
    """Run protoc into this package (imports come out as ``services.proto.encore_pb2``)."""
    if not force and not _stale():
        return
    from grpc_tools import protoc

    root = PROTO_DIR.parent.parent  # the directory holding the ``services`` package
    relative = PROTO_FILE.relative_to(root)
    include = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="encore-protoc-") as out:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{include}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                str(relative),
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed on {PROTO_FILE} (exit {status})")
        for name in GENERATED:
            os.replace(Path(out) / relative.parent / name, PROTO_DIR / name)


generate()

from typing import Any  # noqa: E402

from services.proto import encore_pb2 as _messages  # noqa: E402
from services.proto import encore_pb2_grpc as _services  # noqa: E402

# Generated modules carry no type information: expose them as Any to type checkers.
encore_pb2: Any = _messages
encore_pb2_grpc: Any = _services

__all__ = ["encore_pb2", "encore_pb2_grpc", "generate"]
