"""Kill a replica under load and measure what the clients saw (test and benchmark).

Where it sits: tests/services/test_failures.py and benchmarks/bench_serving.py run
``kill_under_load`` against a running app (Serve in the connected Ray, direct ingress,
a shared user store). Closed-loop clients send recommendations and feedback for each
pick (through another Ingress replica when there are several); ``kill -9`` hits one
replica of the named deployment a few seconds in. Clients that lose their replica
set its address aside, retry once on another replica and re-read the addresses
(``direct_ingress_urls``), as a client-side load balancer would. Reported: requests, errors and the error rate, the longest gap between
answers, the recovery time (kill -> the deployment has all its replicas running again),
and, after the sink flushed, whether every acknowledged feedback is in the log exactly
once and whether each listener's state counts every acknowledged listen.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

USERS_PER_WORKER = 3


def replica_pids(deployment: str, app: str = "encore") -> list[int]:
    """PIDs of the deployment's replica processes (Ray titles them ServeReplica:app:name)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if f"ServeReplica:{app}:{deployment}" in title:
            pids.append(int(entry.name))
    return sorted(pids)


def running_replicas(deployment: str, app: str = "encore") -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return 0
    states = status.deployments[deployment].replica_states
    return sum(n for state, n in states.items() if str(getattr(state, "value", state)) == "RUNNING")


class Addresses:
    """The Ingress replicas' direct HTTP addresses, as a client-side load balancer keeps
    them: an address whose connection failed is set aside (until the controller lists a
    changed set, or ``AVOID_S`` passes) and the request is retried once elsewhere."""

    AVOID_S = 15.0

    def __init__(self) -> None:
        self.urls = self.read()
        self.avoid: dict[str, float] = {}

    @staticmethod
    def read() -> list[str]:
        from services.app import direct_ingress_urls

        return direct_ingress_urls()["http"]

    def refresh(self) -> None:
        try:
            fresh = self.read()
        except Exception:  # the controller is busy replacing a replica: keep the old list
            return
        if fresh and set(fresh) != set(self.urls):
            self.urls = fresh
            self.avoid = {u: t for u, t in self.avoid.items() if u in fresh}

    def failed(self, url: str) -> None:
        self.avoid[url] = time.monotonic() + self.AVOID_S
        self.refresh()

    def pick(self, n: int) -> str:
        now = time.monotonic()
        live = [u for u in self.urls if self.avoid.get(u, 0.0) < now] or self.urls
        return live[n % len(live)]


async def _post(client: Any, addresses: Addresses, n: int, path: str, body: dict) -> Any:
    """POST to a live replica; on a broken connection set it aside and retry once elsewhere
    (raises the second failure)."""
    import httpx

    for attempt in (0, 1):
        url = addresses.pick(n + attempt)
        try:
            return await client.post(f"{url}{path}", json=body)
        except httpx.HTTPError:
            addresses.failed(url)
            if attempt:
                raise
    raise AssertionError("unreachable")


async def _worker(
    worker: int, addresses: Addresses, tracks: list[str], until: float, log: dict
) -> None:
    import httpx

    i = 0
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < until:
            user = f"drill-{worker}-{i % USERS_PER_WORKER}"
            body = {"user_id": user, "track_id": tracks[(worker * 7919 + i) % len(tracks)]}
            i += 1
            try:
                answer = await _post(client, addresses, worker + i, "/v1/recommend", body)
            except httpx.HTTPError as exc:
                log["errors"].append(f"recommend: {type(exc).__name__}")
                continue
            if answer.status_code != 200:
                log["errors" if answer.status_code != 503 else "shed"].append(answer.status_code)
                continue
            log["answers"].append(time.monotonic())
            decision = answer.json()
            feedback = {"request_id": decision["request_id"], "track_id": decision["chosen_track_id"],
                        "listen_fraction": 1.0, "liked": False, "skip_level": 3}  # fmt: skip
            try:  # through the next replica: feedback may reach any of them
                ack = await _post(client, addresses, worker + i + 1, "/v1/feedback", feedback)
            except httpx.HTTPError as exc:
                log["errors"].append(f"feedback: {type(exc).__name__}")
                continue
            if ack.status_code == 200:
                log["acked"].append((decision["request_id"], user, ack.json()["listened"]))
            else:
                log["errors"].append(f"feedback {ack.status_code}")


def _recovered(victim: str, wanted: int, killed_pid: int) -> bool:
    """The deployment has ``wanted`` running replicas again, none of them the killed one,
    and (Ingress) every listed address answers."""
    import httpx

    pids = replica_pids(victim)
    if killed_pid in pids or len(pids) < wanted or running_replicas(victim) < wanted:
        return False
    if victim != "Ingress":
        return True
    urls = Addresses.read()
    try:
        return len(urls) >= wanted and all(
            httpx.get(f"{u}/v1/health", timeout=2).status_code == 200 for u in urls
        )
    except httpx.HTTPError:
        return False


def kill_under_load(
    tracks: list[str],
    victim: str,
    seconds: float = 20.0,
    kill_after_s: float = 5.0,
    concurrency: int = 8,
) -> dict[str, Any]:
    """Load for ``seconds``; ``kill -9`` one ``victim`` replica after ``kill_after_s``."""
    addresses = Addresses()
    wanted = running_replicas(victim)
    log: dict[str, list] = {"answers": [], "acked": [], "errors": [], "shed": []}
    started = time.monotonic()
    outcome: dict[str, Any] = {"victim": victim, "replicas": wanted}

    def killer() -> None:
        time.sleep(kill_after_s)
        pids = replica_pids(victim)
        if not pids:
            outcome["kill"] = "no replica process found"
            return
        os.kill(pids[0], signal.SIGKILL)
        killed_at = time.monotonic()
        outcome["killed_at_s"] = round(killed_at - started, 1)
        while time.monotonic() < killed_at + 120:
            if _recovered(victim, wanted, pids[0]):
                outcome["recovery_s"] = round(time.monotonic() - killed_at, 1)
                break
            time.sleep(0.25)
        addresses.refresh()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()

    async def load() -> None:
        until = started + seconds
        await asyncio.gather(
            *[_worker(w, addresses, tracks, until, log) for w in range(concurrency)]
        )

    asyncio.run(load())
    thread.join()
    times = sorted(log["answers"])
    requests = len(log["answers"]) + len(log["errors"])
    outcome.update(
        requests=requests,
        errors=len(log["errors"]),
        error_rate=len(log["errors"]) / max(requests, 1),
        shed=len(log["shed"]),
        first_errors=log["errors"][:5],
        max_gap_s=round(
            max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0), 3
        ),
        acked=log["acked"],
    )
    return outcome


def check_durability(outcome: dict[str, Any], log_uri: str, wait_s: float = 60.0) -> dict[str, Any]:
    """After the run: acknowledged feedback in the log exactly once, and each listener's
    state counting every acknowledged listen (the store may hold listens journaled just
    before a kill whose answer never reached the client: at most the logged count)."""
    import collections

    import httpx

    from rl.feedback.log import read_decisions_table

    acked = {request_id for request_id, _, _ in outcome["acked"]}
    deadline = time.monotonic() + wait_s
    logged: list[str] = []
    while time.monotonic() < deadline:
        logged = read_decisions_table(log_uri)["request_id"].to_pylist()
        if acked <= set(logged):
            break
        time.sleep(1.0)
    counts = collections.Counter(logged)
    listened = collections.Counter(user for _, user, heard in outcome["acked"] if heard)
    url = Addresses.read()[0]
    short, views = [], 0
    for user, expected in listened.items():
        view = httpx.get(f"{url}/v1/users/{user}", timeout=10)
        views += 1
        if view.status_code != 200 or view.json()["listens"] < expected:
            short.append(user)
    return {
        "acked": len(acked),
        "lost": len(acked - set(logged)),
        "duplicated": sum(1 for r in acked if counts[r] > 1),
        "users_checked": views,
        "users_missing_listens": short,
    }
