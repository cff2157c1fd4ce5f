"""The config for Ray's fake multi-node provider derived from cluster.yaml (same node type
names, resources scaled down to one machine), which ``encore cluster proof`` runs on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rl.cluster.config_check import HEAD_NODE_TYPE, ConfigCheckError, validate_cluster_config


@dataclass(frozen=True)
class FakeScale:
    """How cluster.yaml's node types shrink to fit one small machine."""

    cpus: dict[str, int]
    """Logical CPUs per fake node, by node type name (types not named: 1)."""
    max_workers: dict[str, int]
    """Cap on fake nodes per type (types not named: 1)."""
    min_workers: dict[str, int] = field(default_factory=dict)
    """Fake nodes per type kept up from the start, instead of cluster.yaml's min_workers
    (still capped by ``max_workers``); e.g. two serving nodes for two Ingress replicas."""
    object_store_bytes: int = 150 * 1024**2
    """Object store per fake node; small, since every node shares this machine's memory."""
    idle_timeout_minutes: float = 0.5
    """Short, so scale-down is seen within the proof."""

    def __post_init__(self) -> None:
        if any(c < 0 for c in self.cpus.values()):
            raise ValueError(f"cpus must be >= 0, got {self.cpus}")
        if any(m < 0 for m in self.max_workers.values()):
            raise ValueError(f"max_workers must be >= 0, got {self.max_workers}")
        if any(m < 0 for m in self.min_workers.values()):
            raise ValueError(f"min_workers must be >= 0, got {self.min_workers}")
        if self.object_store_bytes < 75 * 1024**2:
            raise ValueError(f"object_store_bytes must be >= 75 MiB, got {self.object_store_bytes}")
        if self.idle_timeout_minutes <= 0:
            raise ValueError(f"idle_timeout_minutes must be > 0, got {self.idle_timeout_minutes}")


def fake_cluster_config(
    cluster_config: Mapping[str, Any], scale: FakeScale, gcs_address: str
) -> dict[str, Any]:
    """The fake_multinode config with cluster.yaml's node types, scaled down by ``scale``.

    Node type names, min_workers (capped by the scale) and the role split (serving vs
    training) are kept; instance types, setup and start commands are dropped (every fake
    node runs on this machine, in this virtual environment).
    """
    spec = validate_cluster_config(cluster_config)
    if spec.head_node_type != HEAD_NODE_TYPE:
        raise ConfigCheckError(
            [
                f"head_node_type must be {HEAD_NODE_TYPE!r} (the fake provider's), got {spec.head_node_type!r}"
            ]
        )
    node_types: dict[str, Any] = {}
    total_max = 0
    for t in spec.node_types:
        cpus = scale.cpus.get(t.name, 1)
        entry: dict[str, Any] = {"resources": {"CPU": cpus}, "node_config": {}}
        if t.is_head:
            entry["max_workers"] = 0
        else:
            cap = min(t.max_workers, scale.max_workers.get(t.name, 1))
            entry["resources"]["object_store_memory"] = scale.object_store_bytes
            entry["min_workers"] = min(scale.min_workers.get(t.name, t.min_workers), cap)
            entry["max_workers"] = cap
            total_max += cap
        # Custom resources (not CPU/GPU/memory) keep their meaning on the fake nodes.
        for name, amount in t.resources.items():
            if name not in ("CPU", "GPU", "memory", "object_store_memory"):
                entry["resources"][name] = int(amount)
        node_types[t.name] = entry
    return {
        "cluster_name": f"{spec.cluster_name}-fake",
        "max_workers": total_max,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": scale.idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            # Fake worker raylets join this GCS (default 127.0.0.1:6379, which may be another
            # Ray on the machine).
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "head_node_type": HEAD_NODE_TYPE,
        "available_node_types": node_types,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
