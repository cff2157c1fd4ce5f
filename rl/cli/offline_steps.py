"""``encore offline-steps``: convert a feedback log into RLlib's offline format with Ray Data.

Where it sits: ``encore simulate`` (or the service) writes the decision log ->
**offline-steps** -> ``encore train --data OUT``. Each logged session becomes an episode
(eps_id, t, obs, actions, rewards, new_obs, terminateds, truncateds, action_logp); the
observation layout is written beside the data (``_layout.json``) so training picks it up.
"""

from __future__ import annotations

import argparse
import time

from rl import paths, storage


def register(subparsers: argparse._SubParsersAction) -> None:
    steps = subparsers.add_parser(
        "offline-steps",
        help="convert a decision log into RLlib offline steps (Ray Data) for `encore train`",
    )
    steps.add_argument("--log", default=None, help=f"log URI (default {paths.default_log_uri()})")
    steps.add_argument(
        "--out", default=None, help="output URI (default <data>/offline/steps); must not exist"
    )
    steps.add_argument("--embedding", default=None, help="embedding URI (trained if absent)")
    steps.add_argument("--k", type=int, default=4, help="candidates per decision (default 4)")
    steps.add_argument("--days", type=int, nargs="+", default=None, help="only these log days")
    steps.add_argument(
        "--partitions", type=int, default=None, help="shuffle partitions (default: by log size)"
    )
    steps.set_defaults(func=run_offline_steps)


def run_offline_steps(args: argparse.Namespace) -> int:
    from rl.embedding import ensure_song_embedding
    from rl.feedback_log import read_decisions
    from rl.observation import ObservationLayout
    from rl.offline_data import write_offline_steps
    from rl.ray_runtime import start_ray

    log_uri = args.log or paths.default_log_uri()
    out_uri = args.out or storage.join(paths.data_dir(), "offline", "steps")
    if storage.list_dir(out_uri):
        raise SystemExit(f"error: {out_uri} already holds data; choose an empty --out")
    embedding = ensure_song_embedding(args.embedding)
    layout = ObservationLayout(k=args.k, latent_dim=embedding.latents.shape[1])
    started = time.perf_counter()
    start_ray()
    # Sessions are grouped with a hash shuffle; Ray Data's default of 200 partitions costs
    # more than the work on small logs, so aim for about 25,000 decisions per partition.
    decisions = read_decisions(log_uri, args.days).count()
    partitions = args.partitions or min(200, max(2, decisions // 25_000 + 1))
    print(f"{decisions:,} logged decisions under {log_uri}; {partitions} partitions", flush=True)
    rows = write_offline_steps(
        log_uri,
        out_uri,
        embedding.latents,
        [str(track) for track in embedding.track_ids],
        layout,
        days=args.days,
        num_partitions=partitions,
    )
    print(f"wrote {rows:,} offline steps to {out_uri} in {time.perf_counter() - started:.1f} s")
    return 0
