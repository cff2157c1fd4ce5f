"""Load shedding without Ray: the middleware and counter over a plain ASGI app whose
recommendations wait until released, so the in-flight count is known exactly."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from services.load_shedding import InFlight, ShedOverload


def test_past_the_limit_recommendations_get_503_with_retry_after_and_feedback_never():
    shed: list[str] = []
    in_flight = InFlight(limit=3, on_shed=shed.append)
    release = asyncio.Event()
    app = FastAPI()
    app.add_middleware(ShedOverload, get_in_flight=lambda: in_flight)

    @app.post("/v1/recommend")
    async def recommend() -> dict:
        await release.wait()
        return {"ok": True}

    @app.post("/v1/feedback")
    async def give_feedback() -> dict:
        return {"ok": True}

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            waiting = [asyncio.create_task(client.post("/v1/recommend")) for _ in range(3)]
            while in_flight.current < 3:
                await asyncio.sleep(0.001)
            refused = await client.post("/v1/recommend")  # the 4th: shed at once
            feedback = await client.post("/v1/feedback")  # never shed
            release.set()
            answered = await asyncio.gather(*waiting)
            after = await client.post("/v1/recommend")  # room again
            return [*answered, after], refused, feedback

    answered, refused, feedback = asyncio.run(scenario())
    assert [r.status_code for r in answered] == [200, 200, 200, 200]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "3 recommendations in flight (limit 3)" in refused.json()["detail"]
    assert feedback.status_code == 200
    assert in_flight.current == 0 and in_flight.shed == 1 and shed == ["http"]


def test_a_zero_limit_never_sheds_and_a_negative_one_is_refused():
    unlimited = InFlight(limit=0)
    assert all(unlimited.try_enter() for _ in range(1000))
    with pytest.raises(ValueError, match="limit must be >= 0"):
        InFlight(limit=-1)
