"""``encore offline-steps``: convert a feedback log into RLlib's offline format with Ray Data.

Where it sits: ``encore simulate`` (or the service) writes the decision log ->
**offline-steps** -> ``encore train --data OUT``. Each logged session becomes an episode
(eps_id, t, obs, actions, rewards, new_obs, terminateds, truncateds, action_logp); the
observation layout is written beside the data (``_layout.json``) so training picks it up.

``--reward return-days`` gives every decision the paper's long-term reward of
``rl.longterm.return_reward``: the session reward + λ (``--return-weight``) x the days in the
next ``--return-window-days`` (59) on which the user came back to the picked song (organic
listens by default); decisions too close to the log's end to see the whole window are
dropped (``--censored drop``) or their count is scaled up (``scale``). The reward definition
and what was dropped go to ``_reward.json`` beside the steps.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from rl import paths, storage
from rl.cli.options import (
    OLD_REWARD_NAMES,
    RETURN_DAYS_REWARD,
    REWARDS,
    SESSION_REWARD,
    renamed_choice,
)

if TYPE_CHECKING:
    from rl.longterm.return_reward import LongTermRewardConfig


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
    steps.add_argument(
        "--reward",
        type=renamed_choice(OLD_REWARD_NAMES, "--reward"),
        choices=REWARDS,
        default=SESSION_REWARD,
        help="session: the logged per-decision reward (default); return-days: + λ x return days "
        "(old names seed1 / longterm still accepted)",
    )
    steps.add_argument("--return-window-days", type=int, default=59,
                       help="return-days: days after the decision whose listens count (default 59)")  # fmt: skip
    add_return_reward_arguments(steps)
    steps.add_argument("--censored", choices=("drop", "scale"), default="drop",
                       help="return-days: decisions whose window passes the log's end (default drop)")  # fmt: skip
    steps.set_defaults(func=run_offline_steps)


def run_offline_steps(args: argparse.Namespace) -> int:
    from rl.cluster.ray_runtime import start_ray
    from rl.decision.observation import ObservationLayout
    from rl.feedback.log import read_decisions
    from rl.feedback.offline_steps import write_offline_steps
    from rl.songs.embedding import ensure_song_embedding

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
    track_ids = [str(track) for track in embedding.track_ids]
    if args.reward == RETURN_DAYS_REWARD:
        from rl.longterm.return_reward import write_long_term_offline_steps

        if args.days:
            raise SystemExit("error: --days is not supported with --reward return-days (the "
                             "return window needs the days after each decision)")  # fmt: skip
        config = return_reward_config(args, args.return_window_days, censored=args.censored)
        summary = write_long_term_offline_steps(
            log_uri, out_uri, embedding.latents, track_ids, layout, config, partitions
        )
        rows = summary.steps
        print(
            f"long-term reward: {summary.dropped_censored:,} of {summary.decisions:,} decisions "
            f"dropped (window past the log's end, day {summary.end_day}); mean return days of "
            f"streamed picks {summary.mean_return_days_listened:.3f}; mean long-term term "
            f"{summary.mean_long_term_reward:.3f}"
        )
    else:
        rows = write_offline_steps(
            log_uri, out_uri, embedding.latents, track_ids, layout,
            days=args.days, num_partitions=partitions,
        )  # fmt: skip
    print(f"wrote {rows:,} offline steps to {out_uri} in {time.perf_counter() - started:.1f} s")
    return 0


def add_return_reward_arguments(parser: argparse.ArgumentParser) -> None:
    """The long-term reward's options, shared by `encore offline-steps` and `encore ab-test`."""
    parser.add_argument("--return-weight", type=float, default=1.0,
                        help="long-term reward: λ, reward per return day (default 1.0)")  # fmt: skip
    parser.add_argument("--return-source", choices=("organic", "any"), default="organic",
                        help="long-term reward: count organic listen days only (default) or any")  # fmt: skip
    parser.add_argument("--credit", choices=("listened", "discovery"), default="listened",
                        help="long-term reward: streamed picks earn return days (default), or "
                        "only streamed picks new to the user")  # fmt: skip


def return_reward_config(
    args: argparse.Namespace, return_window_days: int, censored: str = "drop"
) -> LongTermRewardConfig:
    """``LongTermRewardConfig`` from the options of ``add_return_reward_arguments``."""
    from rl.longterm.return_reward import LongTermRewardConfig

    return LongTermRewardConfig(
        return_window_days=return_window_days,
        return_weight=args.return_weight,
        return_source=args.return_source,
        credit=args.credit,
        censored=censored,
    )
