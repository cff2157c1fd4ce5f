"""ASGI middleware refusing request bodies over a size limit with 413, before parsing.

Where it sits: wrapped around the ingress's FastAPI app. A declared ``Content-Length``
over the limit is refused at once; a chunked body is counted as it arrives and refused
as soon as it passes the limit, so no oversized body is ever held in full.
"""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]


async def send_json_error(
    send: Any,
    status: int,
    detail: str,
    field: str | None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """An ASGI JSON error response ``{"detail", "field"}`` (the shape of the app's own
    errors), for middleware that answers before the app sees the request."""
    body = json.dumps({"detail": detail, "field": field}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Any) -> None:
        detail = f"request body is over the {self.max_bytes}-byte limit"
        await send_json_error(send, 413, detail, "body")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                too_large = False
            if too_large:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        # No declared length (chunked): read up to the limit, then replay to the app.
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed_receive() -> Any:
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await self.app(scope, replayed_receive, send)
