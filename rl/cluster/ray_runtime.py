"""Starting Ray the same way from every command.

Inside a Ray job (``ray job submit``) or with ``RAY_ADDRESS`` set, attach to that cluster;
otherwise start a private local instance (``address="local"``), so a stale cluster left on
the machine is never joined by accident.

Ray's own output (worker logs, Ray Data progress bars and its per-operator INFO lines,
deprecation and FutureWarnings) is kept off the console unless ``ENCORE_VERBOSE=1``
(``encore COMMAND --verbose``): a command prints its own progress and results, and Ray's
logs stay in the session folder (``/tmp/ray/session_latest/logs``).
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "ENCORE_VERBOSE"
"""``1``: show Ray's own logs and progress bars on the console (set by ``--verbose``)."""


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def quiet_ray_output() -> None:
    """Keep Ray's INFO logs, progress bars and warnings off the console."""
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"ray(\.|$)")
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        from ray.data import DataContext
    except ImportError:  # pragma: no cover - Ray Data is a dependency
        return
    context = DataContext.get_current()
    context.enable_progress_bars = False
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False
    for name in ("ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.ERROR)


def start_ray(num_cpus: int | None = None, resources: dict[str, float] | None = None) -> None:
    """Initialise Ray once. ``num_cpus`` and custom ``resources`` apply to the local
    instance only (a cluster offers its own), so a cluster command also runs on one machine."""
    import ray

    if ray.is_initialized():
        return
    loud = verbose()
    if not loud:
        quiet_ray_output()
    level = logging.INFO if loud else logging.ERROR
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=level, log_to_driver=loud)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus or max(2, os.cpu_count() or 2),
            resources=resources or {},
            include_dashboard=False,
            log_to_driver=loud,
            logging_level=level,
        )
    if not loud:
        quiet_ray_output()  # ray.init configures its loggers again
