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
import dataclasses
import time

from rl import paths, storage
from rl.cli.config_options import config_options
from rl.cli.errors import CommandError, UsageError
from rl.cli.options import (
    OLD_REWARD_NAMES,
    RETURN_DAYS_REWARD,
    REWARDS,
    SESSION_REWARD,
    add_command,
    add_embedding_option,
    renamed_choice,
)
from rl.cli.paths_check import (
    fresh_output,
    log_days,
    require_log,
    require_new_output,
    require_path,
    require_writable,
)

RETURN_REWARD_CONFIG = "rl.longterm.return_reward:LongTermRewardConfig"
RETURN_REWARD_CHOICES = {
    "return_source": "RETURN_SOURCES", "credit": "CREDIT_RULES", "censored": "CENSORING",
}  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    steps = add_command(subparsers, "offline-steps", run_offline_steps, description=__doc__)
    steps.add_argument(
        "--log", default=None,
        help=f"decision log URI: the --out of `encore simulate` / `encore import-mssd` "
        f"(default: {paths.default_log_uri()})",
    )  # fmt: skip
    steps.add_argument(
        "--out",
        default=None,
        help="output URI (default: <data>/offline/steps); must be new or empty",
    )
    add_embedding_option(steps)
    config_options(
        steps, "rl.decision.observation:ObservationLayout", attr="layout",
        title="observation layout", only=("k",),
    )  # fmt: skip
    steps.add_argument("--days", type=int, nargs="+", default=None, help="only these log days")
    steps.add_argument(
        "--partitions", type=int, default=None, help="shuffle partitions (default: by log size)"
    )
    steps.add_argument(
        "--reward", type=renamed_choice(OLD_REWARD_NAMES, "--reward"), choices=REWARDS,
        default=SESSION_REWARD,
        help="session: the logged per-decision reward (default); return-days: + λ x return days "
        "(old names seed1 / longterm still accepted)",
    )  # fmt: skip
    add_return_reward_options(steps, window_from_ab_test=False)


def add_return_reward_options(parser: argparse.ArgumentParser, window_from_ab_test: bool) -> None:
    """The return-days reward's options (generated from ``LongTermRewardConfig``), shared by
    `encore offline-steps` and `encore ab-test` (whose window is the test's window - 1)."""
    fields = ("return_weight", "return_source", "credit")
    if window_from_ab_test:
        config_options(
            parser, RETURN_REWARD_CONFIG, attr="return_reward",
            title="return-days reward of the PPO arms (LongTermRewardConfig)", only=fields,
            choices=RETURN_REWARD_CHOICES,
            # The A/B test's window counts the recommendation day: W = window - 1 return days.
            fixed={"return_window_days": lambda args: args.window_days - 1},
        )  # fmt: skip
    else:
        config_options(
            parser, RETURN_REWARD_CONFIG, attr="return_reward",
            title="return-days reward, with --reward return-days (LongTermRewardConfig)",
            only=("return_window_days", *fields, "censored"), choices=RETURN_REWARD_CHOICES,
        )  # fmt: skip


def _check_days(args: argparse.Namespace, log_uri: str) -> None:
    present = log_days(log_uri)
    if args.days:
        missing = sorted(set(args.days) - set(present))
        if missing:
            raise UsageError(
                f"--days {' '.join(map(str, missing))}: not in the log (it has days "
                f"{present[0]}..{present[-1]})"
            )
        if args.reward == RETURN_DAYS_REWARD:
            raise UsageError(
                "--days is not supported with --reward return-days (the return window needs "
                "the days after each decision)"
            )
    config = args.return_reward
    if args.reward == RETURN_DAYS_REWARD and config.censored == "drop":
        span = present[-1] - present[0] + 1
        if config.return_window_days >= span:
            raise UsageError(
                f"--return-window-days {config.return_window_days} is as long as the log "
                f"({span} days): every decision's window passes the log's end and would be dropped",
                f"use --return-window-days below {span}, a longer log, or --censored scale",
            )


def run_offline_steps(args: argparse.Namespace) -> int:
    """convert a decision log into RLlib offline steps (Ray Data) for `encore train`"""
    from rl.cluster.ray_runtime import start_ray
    from rl.feedback.log import read_decisions
    from rl.feedback.offline_steps import write_offline_steps
    from rl.songs.embedding import ensure_song_embedding

    log_uri = require_log(args.log or paths.default_log_uri(), "--log")
    _check_days(args, log_uri)
    out_uri = args.out or storage.join(paths.data_dir(), "offline", "steps")
    require_writable(require_new_output(out_uri, "--out"), "--out")
    if args.embedding:
        require_path(args.embedding, "--embedding", "train one: encore train-embedding --out DIR")
    embedding = ensure_song_embedding(args.embedding)
    layout = dataclasses.replace(args.layout, latent_dim=embedding.latents.shape[1])
    started = time.perf_counter()
    start_ray()
    # Sessions are grouped with a hash shuffle; Ray Data's default of 200 partitions costs
    # more than the work on small logs, so aim for about 25,000 decisions per partition.
    decisions = read_decisions(log_uri, args.days).count()
    if decisions == 0:
        raise CommandError(f"no decisions in {log_uri} (--log)")
    partitions = args.partitions or min(200, max(2, decisions // 25_000 + 1))
    print(f"{decisions:,} logged decisions under {log_uri}; {partitions} partitions", flush=True)
    track_ids = [str(track) for track in embedding.track_ids]
    # Written beside --out and moved into place at the end: Ctrl-C leaves nothing there.
    with fresh_output(out_uri, "--out") as target:
        if args.reward == RETURN_DAYS_REWARD:
            rows = _write_return_days_steps(
                args, log_uri, target, embedding, track_ids, layout, partitions
            )
        else:
            rows = write_offline_steps(
                log_uri, target, embedding.latents, track_ids, layout,
                days=args.days, num_partitions=partitions,
            )  # fmt: skip
    print(f"wrote {rows:,} offline steps to {out_uri} in {time.perf_counter() - started:.1f} s")
    return 0


def _write_return_days_steps(
    args, log_uri, out_uri, embedding, track_ids, layout, partitions
) -> int:
    from rl.longterm.return_reward import write_long_term_offline_steps

    summary = write_long_term_offline_steps(
        log_uri, out_uri, embedding.latents, track_ids, layout, args.return_reward, partitions
    )
    print(
        f"long-term reward: {summary.dropped_censored:,} of {summary.decisions:,} decisions "
        f"dropped (window past the log's end, day {summary.end_day}); mean return days of "
        f"streamed picks {summary.mean_return_days_listened:.3f}; mean long-term term "
        f"{summary.mean_long_term_reward:.3f}"
    )
    return summary.steps
