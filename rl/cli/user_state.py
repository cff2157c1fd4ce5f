"""``encore user-state rebuild``: recompute the served user state from the decision log.

The listeners' state (taste, relationship states, session positions, recent decisions) is a
materialised view of the feedback log (services/core/user_state.py); this folds the log
with Ray Data (``--engine ray``, the default) and loads the result into the store the
service uses: a Redis URL (``--store redis://host:port/db``), replacing the users it holds;
or ``memory``, which only computes and reports (the in-process store rebuilds itself at
every service start).
"""

from __future__ import annotations

import argparse

from rl import paths
from rl.cli.options import add_command, add_embedding_option, add_ray_cpus_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "user-state",
        help="rebuild the served user state from the feedback log (Ray Data)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    rebuild = add_command(actions, "rebuild", run_rebuild)
    rebuild.add_argument("--log", required=True, help="decision log URI (e.g. data/logs/service)")
    rebuild.add_argument(
        "--store",
        default="memory",
        help='"memory" (compute and report only) or redis://host:port/db (default memory)',
    )
    rebuild.add_argument("--namespace", default="encore", help="key prefix in Redis")
    rebuild.add_argument(
        "--data",
        default=None,
        help=f"generated-data root holding the embedding (default {paths.data_dir()})",
    )
    add_embedding_option(rebuild, default="<data>/embedding")
    rebuild.add_argument("--engine", choices=("ray", "pyarrow"), default="ray")
    add_ray_cpus_option(rebuild, default=None)


def run_rebuild(args: argparse.Namespace) -> int:
    """fold the log into the user-state store"""
    import asyncio

    from rl.cli.errors import CommandError
    from services.assembly import load_served_songs, make_user_store
    from services.config import ServiceConfig
    from services.user_state_rebuild import describe_report, rebuild_store

    settings = {
        "data_root": args.data or paths.data_dir(),
        "user_store": args.store,
        "user_store_namespace": args.namespace,
        "log_uri": args.log,
    }
    if args.embedding:
        settings["embedding_uri"] = args.embedding
    try:
        config = ServiceConfig.from_args(settings)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if args.engine == "ray":
        from rl.cluster.ray_runtime import start_ray

        start_ray(num_cpus=args.num_cpus)
    _, catalog = load_served_songs(config)

    async def rebuild() -> dict:
        store = make_user_store(config, default_taste=catalog.latents.mean(axis=0))
        try:
            print(
                f"folding {config.log_uri} into the {store.kind} store ({args.engine}) ...",
                flush=True,
            )
            return await rebuild_store(store, config.log_uri, catalog, engine=args.engine)
        finally:
            await store.close()

    report = asyncio.run(rebuild())
    print(describe_report({"action": "rebuilt", **report}))
    if args.store == "memory":
        print(
            "(memory: nothing kept; the in-process store rebuilds itself when the service starts)"
        )
    return 0
