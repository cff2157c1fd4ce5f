"""Start a local redis-server for the shared user store (tests, benchmarks, ``encore serve``).

Where it sits: ``make install`` installs Debian's redis-server (the Makefile's install
target); the tests (tests/services/conftest.py), the serving benchmark and ``encore serve
--redis`` start one here on a free loopback port, in a directory of their own, with no
persistence (the store is a view of the decision log: ``encore user-state rebuild``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RedisServer:
    process: subprocess.Popen
    port: int
    directory: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis_server(
    directory: str, port: int | None = None, timeout_s: float = 15.0
) -> RedisServer:
    """A redis-server on 127.0.0.1:``port`` (default: a free one), its files in ``directory``.

    Raises FileNotFoundError naming the fix when redis-server is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError(
            "redis-server is not installed: run `make install` (it installs Debian's "
            "redis-server) or `apt-get install -y redis-server`"
        )
    port = port or free_port()
    Path(directory).mkdir(parents=True, exist_ok=True)
    log = open(Path(directory) / "redis.log", "ab")  # noqa: SIM115 (owned by the process)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
         "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = RedisServer(process, port, directory)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}: see {log.name}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise TimeoutError(f"redis-server did not answer on port {port} within {timeout_s} s")
