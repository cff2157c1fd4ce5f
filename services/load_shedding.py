"""Load shedding: past a queue length, refuse at once instead of queueing into timeouts.

Where it sits: around the ingress's ``/v1/recommend`` (HTTP, as ASGI middleware, before the
body is read) and its gRPC ``Recommend``. ``InFlight`` counts the recommendations this
replica has accepted and not yet answered; past ``limit`` a new one is answered at once
with 503 and ``Retry-After`` (HTTP) or RESOURCE_EXHAUSTED (gRPC). Why: under overload a
queue only grows: every request waits behind the others and times out on the client
anyway, after costing the server the work; a fast refusal lets the client back off or try
another replica, and keeps the latency of the requests that are taken.

Feedback is never shed: it is cheap, and losing it loses training data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.http_limits import send_json_error

SHED_PATHS = ("/v1/recommend",)


class InFlight:
    """Counts accepted requests; ``try_enter`` refuses past ``limit`` (0 = never refuse)."""

    def __init__(self, limit: int, on_shed: Callable[[str], None] | None = None) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.limit = limit
        self.current = 0
        self.shed = 0
        self.on_shed = on_shed

    def try_enter(self, transport: str = "http") -> bool:
        if self.limit and self.current >= self.limit:
            self.shed += 1
            if self.on_shed is not None:
                self.on_shed(transport)
            return False
        self.current += 1
        return True

    def leave(self) -> None:
        self.current -= 1

    def refusal(self) -> str:
        return f"overloaded: {self.current} recommendations in flight (limit {self.limit}); retry shortly"


class ShedOverload:
    """ASGI middleware: 503 + Retry-After for ``SHED_PATHS`` while ``in_flight`` is full.

    ``in_flight`` is looked up per request (``get_in_flight``) because the ingress builds
    it in its constructor, after the app and its middleware exist."""

    def __init__(
        self, app: Any, get_in_flight: Callable[[], InFlight | None], retry_after_s: int = 1
    ) -> None:
        self.app = app
        self.get_in_flight = get_in_flight
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        in_flight = self.get_in_flight() if scope["type"] == "http" else None
        if in_flight is None or scope.get("path") not in SHED_PATHS:
            await self.app(scope, receive, send)
            return
        if not in_flight.try_enter("http"):
            retry_after = (b"retry-after", str(self.retry_after_s).encode())
            await send_json_error(send, 503, in_flight.refusal(), None, (retry_after,))
            return
        try:
            await self.app(scope, receive, send)
        finally:
            in_flight.leave()
