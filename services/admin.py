"""What the ingress's model endpoints do: list the registry, and promote with a wait.

Where it sits: ``/v1/models`` and ``/v1/admin/promote`` of the ingress (services/ingress.py)
call ``ModelAdmin``; it talks to the registry (rl/registry.py) and asks the Scorer
deployment what it serves through ``describe`` (an injected coroutine, so this module
holds no Serve handle). Admin actions need ``Authorization: Bearer <token>``; the token is
read from the environment variable ``ServiceConfig.admin_token_env`` names.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rl.registry import ModelRegistry, RegistryError
from services.schemas import ModelsResponse

Describe = Callable[[], Awaitable[dict[str, Any]]]
"""One Scorer replica's ``describe()``: version, policy, loaded_at, refusals, replica."""

PROMOTE_POLL_S = 0.2
"""How often a promotion checks whether the Scorer swapped."""


def check_admin_token(
    expected: str | None, authorization: str | None, env_name: str
) -> tuple[int, str] | None:
    """None when ``authorization`` carries the token, else (status, reason): 403 when
    admin endpoints are off (no token configured), 401 for a missing or wrong one."""
    if expected is None:
        return 403, f"admin endpoints are off: set {env_name}"
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return 401, "missing or wrong admin token"
    return None


class ModelAdmin:
    def __init__(self, registry: ModelRegistry, describe: Describe) -> None:
        self.registry = registry
        self.describe = describe

    async def models(self, probes: int = 4) -> ModelsResponse:
        """The version each answering Scorer replica serves, the registry, and refusals.

        ``probes`` describe calls spread over the replicas by Serve's router, so with a
        few replicas each is usually seen."""
        described = await asyncio.gather(*[self.describe() for _ in range(probes)])
        serving = {
            d["replica"]: {k: d[k] for k in ("version", "policy", "loaded_at")} for d in described
        }
        refusals = {(r["version"], r["at"]): r for d in described for r in d["refusals"]}
        versions, pointer = await asyncio.to_thread(self._registry_listing)
        return ModelsResponse(
            serving=serving,
            production_pointer=pointer,
            versions=versions,
            refusals=sorted(refusals.values(), key=lambda r: r["at"]),
        )

    def _registry_listing(self) -> tuple[list[dict], str | None]:
        try:
            entries = self.registry.list_versions()
            pointer = self.registry.production_version()
        except Exception:  # an unreadable registry must not take /v1/models down
            return [], None
        return [
            {"version": e.version, "algo": e.algo, "created_at": e.created_at, "metrics": e.metrics}
            for e in entries
        ], pointer

    async def promote(self, version: str, wait_s: float) -> tuple[int, dict[str, Any]]:
        """Point production at ``version``, then wait up to ``wait_s`` for the Scorer to
        serve it. Returns (HTTP status, body): 200 once served, 409 when the registry
        refuses it, a Scorer refuses to load it, or the wait ends first."""
        try:
            await asyncio.to_thread(self.registry.promote, version)
        except RegistryError as exc:
            return 409, {"detail": f"refused: {exc}", "field": "version"}
        deadline = time.monotonic() + wait_s
        while True:
            described = await self.describe()
            refused = [r for r in described["refusals"] if r["version"] == version]
            if described["version"] == version or refused or time.monotonic() > deadline:
                break
            await asyncio.sleep(PROMOTE_POLL_S)
        return 200 if described["version"] == version else 409, {
            "promoted": version,
            "serving": described["version"],
            "refusal": refused[-1] if refused else None,
        }
