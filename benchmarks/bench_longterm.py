"""Benchmark: relationship states + discovery dataset from a 100,000-user x 60-day log.

What it does: writes a synthetic feedback log in the decision-log format (full
``rl.feedback.schema.DECISION_SCHEMA``, ``day=N/`` partitions) plus organic listens, for
--users users over --days days (users open the app on ~20% of days, ~8 decisions a session,
habits with a personal pool of songs), then times the long-term data prep on a local Ray
runtime with --cpus CPUs: Ray Data reduction of the log to listen days, the sparse
relationship states of every (user, song) pair, history taste vectors and the discovery
dataset. Log generation is not timed.

Run:  .venv/bin/python benchmarks/bench_longterm.py            (100,000 users x 60 days)
      .venv/bin/python benchmarks/bench_longterm.py --users 10000   (quick)
Expect: the timed part well under the 2-minute target on 2 cores; peak memory printed is
the highest proportional set size (PSS) of this process plus Ray's processes, sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rl.feedback.schema import DECISION_SCHEMA, ORGANIC_SCHEMA


def _memory_bytes_of_tree(root_pid: int) -> int:
    """Proportional set size (PSS) of a process and its descendants, from Linux /proc.

    PSS splits shared pages (Ray's object store, shared libraries) between the processes
    mapping them, so summing over Ray's workers does not count them several times.
    """
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
        stack.extend(children.get(pid, []))
    return total


class PeakMemory:
    def __init__(self, interval: float = 0.2) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _memory_bytes_of_tree(os.getpid()))
            self._stop.wait(interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _memory_bytes_of_tree(os.getpid()))


def _list_array(values: np.ndarray, width: int, value_type: pa.DataType) -> pa.ListArray:
    offsets = np.arange(0, values.size + 1, width, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1), value_type))


def write_synthetic_log(
    log_uri: str, n_users: int, n_days: int, n_songs: int, seed: int
) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    k, n_betas, dim = 4, 4, 5
    pool_size = 40
    pools = rng.integers(0, n_songs, size=(n_users, pool_size))  # each user's habitual songs
    activity = rng.beta(1.2, 5.0, n_users)
    song_ids = np.array([f"s{i:06d}" for i in range(n_songs)], dtype=object)
    user_ids = np.array([f"u{i:07d}" for i in range(n_users)], dtype=object)
    counts = {"decisions": 0, "organic": 0}
    for day in range(n_days):
        active = np.flatnonzero(rng.random(n_users) < activity)
        session_length = rng.integers(1, 16, len(active))
        users = np.repeat(active, session_length)
        n = len(users)
        habitual = rng.random(n) < 0.6
        chosen = np.where(
            habitual, pools[users, rng.integers(0, pool_size, n)], rng.integers(0, n_songs, n)
        )
        candidates = np.stack(
            [chosen, *(rng.integers(0, n_songs, n) for _ in range(k - 1))], axis=1
        )
        listened = rng.random(n) < np.where(habitual, 0.7, 0.3)
        table = pa.table(
            {
                "user_id": pa.array(user_ids[users], pa.string()),
                "session_id": pa.array(
                    np.char.add(user_ids[users].astype(str), f"-{day}"), pa.string()
                ),
                "day": pa.array(np.full(n, day, np.int32)),
                "position": pa.array(np.zeros(n, np.int32)),
                "timestamp": pa.array(np.full(n, 1_700_000_000 + day * 86_400, np.int64)),
                "hour": pa.array(rng.integers(0, 24, n).astype(np.int8)),
                "weekday": pa.array(np.full(n, day % 7, np.int8)),
                "current_track_id": pa.array(song_ids[candidates[:, 1]], pa.string()),
                "candidate_track_ids": _list_array(
                    song_ids[candidates].astype(str), k, pa.string()
                ),
                "candidate_relationship": _list_array(
                    np.zeros(n * k * n_betas, np.float32), k * n_betas, pa.float32()
                ),
                "user_taste": _list_array(
                    rng.normal(size=n * dim).astype(np.float32), dim, pa.float32()
                ),
                "chosen_index": pa.array(np.zeros(n, np.int32)),
                "chosen_track_id": pa.array(song_ids[chosen], pa.string()),
                "behaviour_logp": pa.array(np.full(n, np.log(0.25), np.float32)),
                "listened": pa.array(listened),
                "listen_fraction": pa.array(np.where(listened, 0.9, 0.05).astype(np.float32)),
                "liked": pa.array(np.zeros(n, bool)),
                "skip_level": pa.array(np.where(listened, 3, 0).astype(np.int8)),
                "reward": pa.array(np.zeros(n, np.float32)),
                "source": pa.array(np.full(n, "simulator", object), pa.string()),
                "policy_version": pa.array(np.full(n, "bench", object), pa.string()),
                "arm": pa.array(np.full(n, "", object), pa.string()),
                "request_id": pa.nulls(n, pa.string()),
            },
            schema=DECISION_SCHEMA,
        )
        os.makedirs(f"{log_uri}/decisions/day={day}", exist_ok=True)
        pq.write_table(table, f"{log_uri}/decisions/day={day}/part-0.parquet")
        organic_users = np.repeat(active, rng.poisson(1.5, len(active)))
        m = len(organic_users)
        organic = pa.table(
            {
                "user_id": pa.array(user_ids[organic_users], pa.string()),
                "day": pa.array(np.full(m, day, np.int32)),
                "track_id": pa.array(
                    song_ids[pools[organic_users, rng.integers(0, pool_size, m)]], pa.string()
                ),
                "minutes": pa.array(rng.uniform(2, 8, m).astype(np.float32)),
                "streams": pa.array(np.ones(m, np.int32)),
            },
            schema=ORGANIC_SCHEMA,
        )
        os.makedirs(f"{log_uri}/organic/day={day}", exist_ok=True)
        pq.write_table(organic, f"{log_uri}/organic/day={day}/part-0.parquet")
        counts["decisions"] += n
        counts["organic"] += m
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument(
        "--songs", type=int, default=28_356, help="catalog size (the real catalog's)"
    )
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--horizon", type=int, default=30,
                        help="discovery window; 60 needs > 60 days of log, so 30 on a 60-day log")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import ray

    from rl.decision.observation import DEFAULT_BETAS
    from rl.longterm.listen_days import listen_days_from_log
    from rl.longterm.relationship_history import RelationshipStateStore
    from rl.longterm.stickiness import discovery_dataset
    from rl.longterm.taste import TasteModel

    work = tempfile.mkdtemp(prefix="encore-bench-longterm-")
    try:
        start = time.time()
        counts = write_synthetic_log(f"{work}/log", args.users, args.days, args.songs, args.seed)
        print(f"log written (not timed): {counts['decisions']:,} decisions, {counts['organic']:,} organic rows "
              f"in {time.time() - start:.0f} s")  # fmt: skip
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        track_ids = np.array([f"s{i:06d}" for i in range(args.songs)], dtype=object)
        latents = np.random.default_rng(1).normal(size=(args.songs, 5)).astype(np.float32)
        timings = {}
        with PeakMemory() as memory:
            t0 = time.time()
            listen_days = listen_days_from_log(f"{work}/log", track_ids=track_ids)
            timings["listen days (Ray Data read + reduce)"] = time.time() - t0
            t1 = time.time()
            store = RelationshipStateStore.from_listen_days(listen_days, betas=DEFAULT_BETAS)
            timings["relationship states (all pairs)"] = time.time() - t1
            t2 = time.time()
            taste = TasteModel(60.0).fit(listen_days, latents)
            discoveries = discovery_dataset(listen_days, taste, horizon_days=args.horizon)
            timings["taste + discovery dataset"] = time.time() - t2
            total = time.time() - t0
        print(f"{args.users:,} users x {args.days} days, {args.cpus} CPUs")
        print(f"listen days: {len(listen_days):,}; relationship pairs: {len(store):,}; "
              f"discoveries with a full {args.horizon}-day window: {len(discoveries):,}")  # fmt: skip
        for name, seconds in timings.items():
            print(f"  {name:<40s} {seconds:7.1f} s")
        print(f"  {'TOTAL (target <= 120 s)':<40s} {total:7.1f} s")
        print(f"peak memory, PSS (driver + Ray processes): {memory.peak / 2**30:.2f} GiB")
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
