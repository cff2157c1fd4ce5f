"""Offline PPO training throughput: RLlib vs a plain PyTorch loop, same loss/data/model.

What it does: writes a synthetic logged-session dataset (or uses --data), trains the
default offline PPO configuration on RLlib (Ray Data reading + the offline PPO learner,
local learner in this process), then runs a plain PyTorch loop over the same sessions
with the same module, the same GAE and the same loss function (rl/training/ppo_loss.py),
same minibatch size and optimiser. Prints samples/s of both (steady state, first
iteration excluded), their ratio (target: RLlib >= 0.5x plain), and the wall time to
train the default model (setup included).

Run:  .venv/bin/python benchmarks/bench_training.py [--sessions 2000] [--iterations 20]
Expect on 2 cores: a few thousand samples/s for both; RLlib's setup (Ray start, episode
writing with Ray Data, algorithm build) adds tens of seconds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from rl.decision.observation import ObservationLayout
from rl.training.config import TrainConfig
from rl.training.episodes import episodes_from_steps
from rl.training.module import build_module
from rl.training.ppo_loss import offline_ppo_loss, session_advantages
from rl.training.synthetic import synthetic_offline_steps


def plain_torch_samples_per_s(steps, layout, config: TrainConfig, total_updates: int) -> float:
    """The same computation as OfflinePPOTorchLearner, without RLlib or Ray."""
    episodes = episodes_from_steps(steps)
    obs = np.concatenate([e.get_observations()[:-1] for e in episodes]).astype(np.float32)
    new_obs = np.concatenate([e.get_observations()[1:] for e in episodes]).astype(np.float32)
    actions = np.concatenate([e.get_actions() for e in episodes])
    rewards = np.concatenate([e.get_rewards() for e in episodes]).astype(np.float32)
    terminated = np.concatenate(
        [[False] * (len(e) - 1) + [e.is_terminated] for e in episodes]
    ).astype(bool)
    logp = np.concatenate([e.get_extra_model_outputs("action_logp") for e in episodes])
    session_step = np.concatenate([e.get_extra_model_outputs("session_step") for e in episodes])
    tensors = [
        torch.from_numpy(np.ascontiguousarray(a))
        for a in (obs, new_obs, actions, rewards, terminated, logp.astype(np.float32), session_step)
    ]
    torch.manual_seed(config.seed)
    module = build_module(layout, config.hidden_sizes)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    n, batch = len(obs), config.train_batch_size

    def update(start: int) -> None:
        rows = slice(start, start + batch)
        o, no, a, r, term, lp, step = (t[rows] for t in tensors)
        values = module.state_values(o)
        next_values = module.state_values(no)
        advantages, targets = session_advantages(
            r,
            values,
            next_values,
            term,
            step,
            config.gamma,
            config.lambda_,
            config.normalize_advantages,
        )
        terms = offline_ppo_loss(
            module.candidate_logits(o), a, lp, values, advantages, targets,
            config.clip, config.vf_coeff, config.entropy_coeff,
        )  # fmt: skip
        optimizer.zero_grad()
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip or float("inf"))
        optimizer.step()

    starts = [(i * batch) % max(n - batch, 1) for i in range(total_updates + 10)]
    for start in starts[:10]:  # warm-up
        update(start)
    begin = time.perf_counter()
    for start in starts[10:]:
        update(start)
    return total_updates * batch / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--session-length", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="intra-op threads for both loops (1: on 2 shared cores more threads oversubscribe)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    import ray

    from rl.training.train import train

    layout = ObservationLayout()
    config = TrainConfig(iterations=args.iterations)
    steps = synthetic_offline_steps(args.sessions, args.session_length, layout, seed=0)
    print(
        f"data: {len(steps)} decisions in {args.sessions} sessions; model hidden "
        f"{config.hidden_sizes}; batch {config.train_batch_size} x "
        f"{config.updates_per_iteration} updates/iteration x {config.iterations} iterations; "
        f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        steps.to_parquet(os.path.join(tmp, "steps.parquet"))
        wall_start = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        run = train(config, os.path.join(tmp, "steps.parquet"), layout, os.path.join(tmp, "run"))
        wall = time.perf_counter() - wall_start
        ray.shutdown()
    steady = run.history[1:] or run.history
    rllib_rate = sum(r.samples for r in steady) / sum(r.seconds for r in steady)
    total_updates = config.updates_per_iteration * len(steady)
    # RLlib's local learner ran in this process, so both loops had the same threads.
    plain_rate = plain_torch_samples_per_s(steps, layout, config, total_updates)
    first, last = run.history[0].losses, run.history[-1].losses
    print(
        f"RLlib offline PPO   : {rllib_rate:10,.0f} samples/s (steady state, {len(steady)} iterations)"
    )
    print(
        f"plain PyTorch loop  : {plain_rate:10,.0f} samples/s (same loss, data, model, batch, "
        f"{torch.get_num_threads()} torch thread(s) for both)"
    )
    print(f"ratio RLlib / plain : {rllib_rate / plain_rate:10.2f}  (target >= 0.5)")
    print(
        f"default model, {config.iterations} iterations "
        f"({config.iterations * config.updates_per_iteration * config.train_batch_size:,} samples): "
        f"{wall:.1f} s wall incl. Ray start + episode writing + build; "
        f"{sum(r.seconds for r in run.history):.1f} s in train()"
    )
    print(
        f"loss first -> last iteration: total {first['total_loss']:.4f} -> {last['total_loss']:.4f}, "
        f"vf {first['vf_loss']:.4f} -> {last['vf_loss']:.4f}"
    )


if __name__ == "__main__":
    main()
