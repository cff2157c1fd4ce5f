"""A light closed-loop HTTP/1.1 load generator for the serving benchmark.

Why not httpx: on 2 cores the load generator shares the CPU with the servers it measures,
and httpx spends 3-5 ms of CPU per request (measured by benchmarks/bench_serving.py's
``client`` column), more than the in-process baseline server itself (about 1 ms). That
made every system look alike and the baseline look slow. This client keeps one keep-alive
connection per worker, writes a prebuilt request and reads the response with a
Content-Length (or chunked) body: about 0.1 ms of CPU per request on uvloop.

It speaks only what the benchmark needs (POST with a JSON body, 1.1 keep-alive answers
from uvicorn), and raises on anything else instead of guessing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit


class HttpError(Exception):
    """The connection broke or the server answered something this client cannot read."""


def build_post(host: str, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("ascii") + body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """(status, lower-cased headers) of a response head (status line + headers, no CRLFCRLF)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"not an HTTP/1.x status line: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise HttpError(f"connection closed or head too long: {exc}") from exc
    status, headers = parse_head(head[:-4])
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        body = b"".join(chunks)
    else:
        raise HttpError(f"response without Content-Length or chunked body: {headers}")
    return status, body


class KeepAliveConnection:
    """One HTTP/1.1 connection, one request in flight at a time (a closed-loop client)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"only http://host:port URLs are supported, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.netloc = parts.netloc
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: object) -> tuple[int, bytes]:
        request = build_post(self.netloc, path, json.dumps(payload).encode())
        for attempt in (0, 1):  # a server may close an idle keep-alive connection: reconnect once
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None
            try:
                self._writer.write(request)
                return await read_response(self._reader)
            except (HttpError, ConnectionError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


async def closed_loop_http(
    url: str | Sequence[str],
    path: str,
    bodies: Callable[[int, int], object],
    concurrency: int,
    deadline: float,
    max_requests: int,
    clock: Callable[[], float],
) -> tuple[list[float], int, list[str], int]:
    """``concurrency`` workers, each on its own connection, POST ``bodies(worker, i)`` until
    ``deadline`` (by ``clock``) or ``max_requests`` in all. Returns (latencies of 200
    answers in seconds, failures, the first few failure reasons, how many of the failures
    were 503s: load shed, the client backs off 50 ms). ``url`` may be a list: worker w uses
    ``url[w % len(url)]`` (several Ingress replicas, each on its own port)."""
    latencies: list[float] = []
    reasons: list[str] = []
    failures = shed = 0
    urls = [url] if isinstance(url, str) else list(url)

    async def worker(worker_id: int) -> None:
        nonlocal failures, shed
        connection = KeepAliveConnection(urls[worker_id % len(urls)])
        i = 0
        try:
            while clock() < deadline and len(latencies) + failures < max_requests:
                payload = bodies(worker_id, i)
                i += 1
                started = clock()
                try:
                    status, body = await connection.post(path, payload)
                except (HttpError, OSError) as exc:
                    status, body = -1, repr(exc).encode()
                if status == 200:
                    latencies.append(clock() - started)
                else:
                    failures += 1
                    shed += status == 503
                    if len(reasons) < 3 and status != 503:
                        reasons.append(f"{status}: {body[:200]!r}")
                    if status == 503:
                        await asyncio.sleep(0.05)  # Retry-After, shortened for the benchmark
        finally:
            await connection.close()

    await asyncio.gather(*[worker(w) for w in range(concurrency)])
    return latencies, failures, reasons, shed


def run(coroutine: object) -> object:
    """Run on uvloop when it is installed (it is, with uvicorn[standard]), else asyncio."""
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]


__all__: Sequence[str] = ["HttpError", "KeepAliveConnection", "closed_loop_http", "run"]
