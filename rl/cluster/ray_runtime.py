"""Starting Ray the same way from every command.

Inside a Ray job (``ray job submit``) or with ``RAY_ADDRESS`` set, attach to that cluster;
otherwise start a private local instance (``address="local"``), so a stale cluster left on
the machine is never joined by accident.
"""

from __future__ import annotations

import os


def start_ray(num_cpus: int | None = None, resources: dict[str, float] | None = None) -> None:
    """Initialise Ray once. ``num_cpus`` and custom ``resources`` apply to the local
    instance only (a cluster offers its own), so a cluster command also runs on one machine."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    ray.init(
        address="local",
        num_cpus=num_cpus or max(2, os.cpu_count() or 2),
        resources=resources or {},
        include_dashboard=False,
        log_to_driver=False,
    )
