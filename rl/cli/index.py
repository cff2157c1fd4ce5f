"""``encore index build | list | promote``: the Retriever's kNN index, built offline.

build    build an index over the embedding's song latents (exact KD-tree for small
         catalogs, faiss IVF or HNSW for large), check recall@k against exact, save it as a
         new version (manifest: kind, recall, build time, memory, checksums);
list     the versions, production marked;
promote  move the production pointer (atomic); every Retriever replica swaps to it within
         its poll interval, with no restart and no failed request.
"""

from __future__ import annotations

import argparse
import sys
import time

from rl.cli.errors import CommandError

KINDS = ("auto", "exact", "ivf", "hnsw")


def default_index_uri() -> str:
    from rl import paths

    return f"{paths.data_dir()}/indexes"


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser(
        "index",
        help="build, list and promote the Retriever's kNN index",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build",
        help="build and check an index over the embedding's latents; save it as a version",
        description="Build an index over the song embedding's latents, check its recall@k "
        "against exact brute force on sampled queries (the build fails below --min-recall), "
        "and save it as a new version. The Retriever serves it once promoted.",
    )
    build.add_argument(
        "--embedding", default=None, help="song embedding URI (default: data/embedding)"
    )
    build.add_argument(
        "--kind", choices=KINDS, default="auto",
        help="exact (KD-tree), ivf / hnsw (faiss), auto: exact up to --exact-max-songs songs, "
        "IVF above (default: auto)",
    )  # fmt: skip
    build.add_argument(
        "--exact-max-songs", type=int, default=200_000,
        help="largest catalog auto builds exactly (default: 200000)",
    )  # fmt: skip
    build.add_argument(
        "--min-recall", type=float, default=0.99,
        help="fail below this recall@k against exact (default: 0.99)",
    )  # fmt: skip
    build.add_argument(
        "--recall-k", type=int, default=20, help="k of the recall check (default: 20)"
    )
    build.add_argument(
        "--recall-queries", type=int, default=200,
        help="sampled queries of the recall check, >= 10 (default: 200)",
    )  # fmt: skip
    build.add_argument(
        "--nlist", type=int, default=0, help="IVF cells; 0 = 4 sqrt(N) in [16, 4096] (default)"
    )
    build.add_argument("--hnsw-m", type=int, default=32, help="HNSW degree (default: 32)")
    build.add_argument("--threads", type=int, default=1, help="faiss threads (default: 1)")
    build.add_argument(
        "--promote", action="store_true", help="promote the new version once it is saved"
    )
    _add_index_option(build)
    build.set_defaults(func=run_build)

    listing = actions.add_parser("list", help="the index versions; * marks production")
    _add_index_option(listing)
    listing.set_defaults(func=run_list)

    promote = actions.add_parser(
        "promote",
        help="point production at an index version",
        description="Move the index registry's production pointer to VERSION (checksums "
        "verified first); Retriever replicas swap to it within their poll interval.",
    )
    promote.add_argument("version", help="a version listed by `encore index list`, e.g. v0001")
    _add_index_option(promote)
    promote.set_defaults(func=run_promote)


def _add_index_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index-dir", default=None,
        help="index registry URI, the service's index_uri (default: data/indexes)",
    )  # fmt: skip


def _registry(args: argparse.Namespace):
    from rl.songs.index_registry import IndexRegistry

    return IndexRegistry(args.index_dir or default_index_uri())


def run_build(args: argparse.Namespace) -> int:
    from rl import paths
    from rl.songs.embedding import ensure_song_embedding
    from rl.songs.index_build import IndexBuildError, IndexConfig, build_index
    from rl.songs.index_registry import catalog_fingerprint

    try:
        config = IndexConfig(
            kind=args.kind,
            exact_max_songs=args.exact_max_songs,
            recall_k=args.recall_k,
            min_recall=args.min_recall,
            recall_queries=args.recall_queries,
            nlist=args.nlist,
            hnsw_m=args.hnsw_m,
            threads=args.threads,
        )
    except IndexBuildError as exc:
        raise CommandError(str(exc)) from None
    embedding_uri = args.embedding or paths.default_embedding_uri()
    embedding = ensure_song_embedding(embedding_uri)
    songs, dim = embedding.latents.shape
    kind = config.resolved_kind(songs)
    print(f"building an {kind} index over {songs:,} songs x {dim} from {embedding_uri} ...")
    try:
        built = build_index(embedding.latents, embedding.track_ids, config)
    except IndexBuildError as exc:
        raise CommandError(f"build failed: {exc}") from None
    registry = _registry(args)
    source = {
        "embedding_uri": embedding_uri,
        "fingerprint": catalog_fingerprint(embedding.latents, embedding.track_ids),
        "songs": songs,
        "dim": dim,
    }
    entry = registry.register(built, source=source, build_config=config.to_dict())
    report = entry.report
    print(
        f"{entry.version}: {entry.kind} {entry.params or ''} built in {report['build_s']:.2f} s, "
        f"index {report['index_bytes'] / 2**20:.1f} MiB (+ latents "
        f"{report['latents_bytes'] / 2**20:.1f} MiB), recall@{report['recall']['k']} "
        f"{report['recall']['value']:.4f} on {report['recall']['queries']} queries"
    )
    print(f"saved to {registry.version_uri(entry.version)}")
    if args.promote:
        registry.promote(entry.version)
        print(f"production -> {entry.version}")
    else:
        print(f"serve it: encore index promote {entry.version}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    versions = registry.list_versions()
    if not versions:
        print(
            f"no index versions in {registry.uri} (the Retriever serves the embedded exact index)"
        )
        return 0
    production = registry.production_version()
    print(f"{'':2}{'version':<8} {'kind':<6} {'created':<17} {'songs':>11} {'recall':>7} "
          f"{'build s':>8} {'MiB':>7}  setting")  # fmt: skip
    for v in versions:
        marker = "* " if v.version == production else "  "
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(v.created_at))
        r = v.report
        print(f"{marker}{v.version:<8} {v.kind:<6} {created:<17} {r['songs']:>11,} "
              f"{r['recall']['value']:>7.4f} {r['build_s']:>8.2f} "
              f"{r['index_bytes'] / 2**20:>7.1f}  {v.params or '-'}")  # fmt: skip
    print("(* = production)" if production else "(none promoted: the embedded exact index serves)")
    if production is not None:
        from rl.songs.index_registry import IndexRegistryError

        try:
            registry.verify(production)
        except (IndexRegistryError, OSError, ValueError) as exc:
            print(f"warning: production {production} does not verify: {exc}", file=sys.stderr)
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from rl.songs.index_registry import IndexRegistryError

    registry = _registry(args)
    try:
        registry.promote(args.version)
    except IndexRegistryError as exc:
        raise CommandError(f"refused: {exc}", "see the versions with `encore index list`") from None
    print(f"production -> {args.version}")
    return 0
