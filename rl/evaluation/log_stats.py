"""How listeners behave in a feedback log, real or simulated (`encore log-stats`).

Where it sits: reads any log (rl/feedback/log.py layout: decision rows of the simulator
or the service, play rows of an imported history, organic per-day sums) and reduces it to
the figures the issue-12 table compares: sessions, skips, activity, gaps, repeats,
discoveries and their return days, organic vs recommended. rl/cli/history.py prints and
writes them; the simulator's calibration compares against them. The reader that turns a
log's datasets into one frame of events is rl/evaluation/log_events.py.

Shape: a pure pandas/numpy core, ``behaviour_counts(events, window)``, turns the events
of complete users into additive counts (sums and integer histograms, so medians and
quantiles stay exact when counts of user groups are added); ``figures(counts)`` makes
the numbers. ``log_stats`` runs the core in-process, or as a Ray Data shell for large
logs: events hashed into user buckets, one ``map_groups`` call per bucket, counts summed.

Definitions (those of ../shared/data/README.md for the shared history):
- a play is a decision row, a play row, or (only when a log has no play rows) one stream
  of an organic per-day row; a stream is a play of >= 30 s (``listened``/``streamed``);
- a skip: a play row's ``skipped``; a decision row with skip level <= 1 (MSSD's skip_2,
  "played briefly"); organic per-day rows record none. Skip figures use plays whose skip
  is known; P(skip | previous ...) pairs consecutive plays of one session;
- sessions are the log's own (importers cut them at 30-minute gaps); organic per-day rows
  belong to none; sessions per active day = sessions / active user-days;
- an active day is a user-day with a play; its share is over the log's span (first to
  last day of the log, for every user);
- a discovery is a (user, track) whose first stream falls on day ``lead_days`` (30) or
  later and at least ``end_margin_days`` (60) before the log's last day; its return days
  are the distinct days with a stream of it in the ``follow_days`` (59) days after.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

# The log reader moved to rl/evaluation/log_events.py; its names stay importable from here.
from rl.evaluation.log_events import (  # noqa: F401
    _READERS,
    EVENT_COLUMNS,
    _count_rows,
    _files,
    decision_events,
    load_events,
    organic_events,
    play_events,
)

MAX_SESSION = 200  # histogram bins; longer sessions share the last bin (their sum stays exact)
MAX_POSITION = 20  # skip rate by position 0..19, then 20+
MAX_GAP = 400
MAX_DAY_PLAYS = 500


@dataclass(frozen=True)
class DiscoveryWindow:
    """Which first streams count as discoveries, and how long their return days are followed."""

    first_day: int
    """The log's first day."""
    last_day: int
    """The log's last day."""
    lead_days: int = 30
    """A first stream counts from this many days after the log's first day (earlier ones
    may be songs known from before the log)."""
    end_margin_days: int = 60
    """... up to this many days before the log's last day (so the follow-up is observed)."""
    follow_days: int = 59
    """Return days are counted on days first+1 .. first+follow_days."""

    def __post_init__(self) -> None:
        if self.last_day < self.first_day:
            raise ValueError(f"last_day {self.last_day} < first_day {self.first_day}")
        if self.lead_days < 0 or self.follow_days < 1 or self.end_margin_days < self.follow_days:
            raise ValueError(
                "need lead_days >= 0, follow_days >= 1 and end_margin_days >= follow_days, got "
                f"{self.lead_days}, {self.follow_days}, {self.end_margin_days}"
            )

    @property
    def span_days(self) -> int:
        return self.last_day - self.first_day + 1

    @property
    def eligible(self) -> tuple[int, int]:
        """Inclusive range of first-stream days that count."""
        return self.first_day + self.lead_days, self.last_day - self.end_margin_days


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n, np.int64)


@dataclass
class BehaviourCounts:
    """Additive counts over a set of users (add two disjoint sets with ``+``)."""

    users: int = 0
    active_user_days: int = 0
    plays: int = 0
    recommended_plays: int = 0
    streams: int = 0
    repeat_plays: int = 0
    sessions: int = 0
    session_plays: int = 0
    session_length: np.ndarray = field(default_factory=lambda: _zeros(MAX_SESSION + 1))
    day_plays: np.ndarray = field(default_factory=lambda: _zeros(MAX_DAY_PLAYS + 1))
    skip_known: int = 0
    skips: int = 0
    position_plays: np.ndarray = field(default_factory=lambda: _zeros(MAX_POSITION + 1))
    position_skips: np.ndarray = field(default_factory=lambda: _zeros(MAX_POSITION + 1))
    after_skip: int = 0
    skip_after_skip: int = 0
    after_play: int = 0
    skip_after_play: int = 0
    gaps: np.ndarray = field(default_factory=lambda: _zeros(MAX_GAP + 1))
    gap_days: int = 0
    return_days: np.ndarray = field(default_factory=lambda: _zeros(1))
    organic_return_days: np.ndarray = field(default_factory=lambda: _zeros(1))

    def __add__(self, other: BehaviourCounts) -> BehaviourCounts:
        out = BehaviourCounts()
        for item in fields(self):
            a, b = getattr(self, item.name), getattr(other, item.name)
            if isinstance(a, np.ndarray):
                size = max(len(a), len(b))
                a, b = np.pad(a, (0, size - len(a))), np.pad(b, (0, size - len(b)))
            setattr(out, item.name, a + b)
        return out


def _hist(values: np.ndarray, cap: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(np.minimum(values, cap).astype(np.int64), weights, minlength=cap + 1).astype(
        np.int64
    )


def behaviour_counts(events: pd.DataFrame, window: DiscoveryWindow) -> BehaviourCounts:
    """Counts of complete users' events (EVENT_COLUMNS; see the module docstring)."""
    counts = BehaviourCounts()
    if events.empty:
        counts.return_days = _zeros(window.follow_days + 1)
        counts.organic_return_days = _zeros(window.follow_days + 1)
        return counts
    weight = events["count"].to_numpy(np.int64)
    counts.users = int(events["user_id"].nunique())
    counts.plays = int(weight.sum())
    counts.recommended_plays = int(weight[events["recommended"].to_numpy(bool)].sum())
    counts.streams = int(weight[events["streamed"].to_numpy(bool)].sum())
    counts.repeat_plays = counts.plays - int(
        events[["user_id", "track_id"]].drop_duplicates().shape[0]
    )

    user_days = events.groupby(["user_id", "day"], sort=True)["count"].sum()
    counts.active_user_days = len(user_days)
    counts.day_plays = _hist(user_days.to_numpy(), MAX_DAY_PLAYS)
    days = user_days.index.get_level_values("day").to_numpy(np.int64)
    same_user = user_days.index.get_level_values("user_id").to_numpy(dtype=object)
    consecutive = same_user[1:] == same_user[:-1]
    day_gaps = np.diff(days)[consecutive]
    counts.gaps, counts.gap_days = _hist(day_gaps, MAX_GAP), int(day_gaps.sum())

    _session_counts(events, counts)
    counts.return_days, counts.organic_return_days = _return_day_hists(events, window)
    return counts


def _session_counts(events: pd.DataFrame, counts: BehaviourCounts) -> None:
    in_session = events[events["session_id"].notna()]
    if in_session.empty:
        return
    ordered = in_session.sort_values(["session_id", "position"], kind="stable")
    lengths = ordered.groupby("session_id", sort=False).size().to_numpy()
    counts.sessions, counts.session_plays = len(lengths), int(lengths.sum())
    counts.session_length = _hist(lengths, MAX_SESSION)
    skipped = ordered["skipped"].to_numpy(np.float64)  # 1, 0 or NaN (unknown)
    known = ~np.isnan(skipped)
    counts.skip_known, counts.skips = int(known.sum()), int(np.nansum(skipped))
    position = np.minimum(ordered["position"].to_numpy(np.int64), MAX_POSITION)
    counts.position_plays = _hist(position[known], MAX_POSITION)
    counts.position_skips = _hist(position[known], MAX_POSITION, skipped[known])
    session = ordered["session_id"].to_numpy(dtype=object)
    raw_position = ordered["position"].to_numpy(np.int64)
    # Consecutive plays only: a sample (MSSD's) may hold a session with holes.
    pair = (session[1:] == session[:-1]) & (np.diff(raw_position) == 1) & known[1:] & known[:-1]
    previous, current = skipped[:-1][pair], skipped[1:][pair]
    counts.after_skip = int((previous == 1).sum())
    counts.skip_after_skip = int(((previous == 1) & (current == 1)).sum())
    counts.after_play = int((previous == 0).sum())
    counts.skip_after_play = int(((previous == 0) & (current == 1)).sum())


def _return_day_hists(
    events: pd.DataFrame, window: DiscoveryWindow
) -> tuple[np.ndarray, np.ndarray]:
    streams = events.loc[
        events["streamed"].to_numpy(bool), ["user_id", "track_id", "day", "recommended"]
    ]
    streams = streams.drop_duplicates(["user_id", "track_id", "day", "recommended"])
    first = streams.groupby(["user_id", "track_id"])["day"].min().rename("first").reset_index()
    low, high = window.eligible
    first = first[(first["first"] >= low) & (first["first"] <= high)]
    hists = []
    for organic_only in (False, True):
        later = streams if not organic_only else streams[~streams["recommended"].to_numpy(bool)]
        joined = later.merge(first, on=["user_id", "track_id"])
        after = joined["day"] - joined["first"]
        joined = joined[(after >= 1) & (after <= window.follow_days)]
        per_item = (
            joined.drop_duplicates(["user_id", "track_id", "day"])
            .groupby(["user_id", "track_id"])
            .size()
        )
        days = per_item.reindex(
            pd.MultiIndex.from_frame(first[["user_id", "track_id"]]), fill_value=0
        )
        hists.append(_hist(days.to_numpy(np.int64), window.follow_days))
    return hists[0], hists[1]


# -- numbers ------------------------------------------------------------------------------
def _median(hist: np.ndarray) -> float:
    total = hist.sum()
    if total == 0:
        return float("nan")
    cumulative = np.cumsum(hist)
    lower = int(np.searchsorted(cumulative, (total + 1) // 2))  # the ((n+1)//2)-th value
    upper = int(np.searchsorted(cumulative, total // 2 + 1))
    return (lower + upper) / 2


def _quantile(hist: np.ndarray, q: float) -> float:
    """The q-quantile by numpy's default (linear) rule, from an integer histogram."""
    total = int(hist.sum())
    if total == 0:
        return float("nan")
    position = q * (total - 1)
    cumulative = np.cumsum(hist)
    below = int(np.searchsorted(cumulative, int(np.floor(position)) + 1))
    above = int(np.searchsorted(cumulative, int(np.ceil(position)) + 1))
    return below + (above - below) * (position - np.floor(position))


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def figures(counts: BehaviourCounts, window: DiscoveryWindow) -> dict[str, Any]:
    """The report's numbers (NaN where the log holds nothing to measure)."""
    values = np.arange(len(counts.return_days))
    discoveries = int(counts.return_days.sum())
    organic = counts.organic_return_days
    return {
        "users": counts.users,
        "span_days": window.span_days,
        "plays": counts.plays,
        "active_days_per_user": _ratio(counts.active_user_days, counts.users),
        "active_day_share": _ratio(counts.active_user_days, counts.users * window.span_days),
        "plays_per_active_day": _ratio(counts.plays, counts.active_user_days),
        "plays_per_active_day_median": _median(counts.day_plays),
        "sessions_per_active_day": _ratio(counts.sessions, counts.active_user_days),
        "plays_per_session": _ratio(counts.session_plays, counts.sessions),
        "plays_per_session_median": _median(counts.session_length),
        "single_play_session_share": _ratio(counts.session_length[1], counts.sessions),
        "p_skip": _ratio(counts.skips, counts.skip_known),
        "p_skip_after_skip": _ratio(counts.skip_after_skip, counts.after_skip),
        "p_skip_after_play": _ratio(counts.skip_after_play, counts.after_play),
        "gap_days_mean": _ratio(counts.gap_days, counts.gaps.sum()),
        "gap_days_median": _median(counts.gaps),
        "repeat_share": _ratio(counts.repeat_plays, counts.plays),
        "stream_share": _ratio(counts.streams, counts.plays),
        "recommended_share": _ratio(counts.recommended_plays, counts.plays),
        "organic_share": _ratio(counts.plays - counts.recommended_plays, counts.plays),
        "discoveries": discoveries,
        "return_days_mean": _ratio((values * counts.return_days).sum(), discoveries),
        "return_days_median": _median(counts.return_days),
        "return_share_any": _ratio(counts.return_days[1:].sum(), discoveries),
        "return_share_3plus": _ratio(counts.return_days[3:].sum(), discoveries),
        "return_days_p90": _quantile(counts.return_days, 0.9),
        "organic_return_days_mean": _ratio((values * organic).sum(), organic.sum()),
        "organic_return_share_any": _ratio(organic[1:].sum(), organic.sum()),
        "distributions": {
            "session_length": counts.session_length.tolist(),
            "plays_per_active_day": counts.day_plays.tolist(),
            "skip_rate_by_position": [
                _ratio(s, n)
                for s, n in zip(counts.position_skips, counts.position_plays, strict=True)
            ],
            "gap_days": counts.gaps.tolist(),
            "return_days": counts.return_days.tolist(),
        },
    }


@dataclass
class LogStats:
    log: str
    engine: str
    window: DiscoveryWindow
    counts: BehaviourCounts
    numbers: dict[str, Any]


def log_stats(
    log_uri: str,
    engine: str = "auto",
    lead_days: int = 30,
    end_margin_days: int = 60,
    follow_days: int = 59,
    ray_above_rows: int = 5_000_000,
    buckets: int = 64,
) -> LogStats:
    """The figures of the log at ``log_uri``; ``engine`` "pandas", "ray" or "auto" (Ray Data
    above ``ray_above_rows`` rows)."""
    from rl import storage

    if engine not in ("auto", "pandas", "ray"):
        raise ValueError(f"engine must be auto, pandas or ray, got {engine!r}")
    files = _files(log_uri)
    filesystem, _ = storage.resolve(log_uri)
    if engine == "auto":
        rows = sum(_count_rows(paths, filesystem) for paths in files.values())
        engine = "ray" if rows > ray_above_rows else "pandas"
    if engine == "pandas":
        events = load_events(log_uri)
        window = DiscoveryWindow(
            int(events["day"].min()),
            int(events["day"].max()),
            lead_days,
            end_margin_days,
            follow_days,
        )
        counts = behaviour_counts(events, window)
    else:
        counts, window = _counts_with_ray(
            files, filesystem, lead_days, end_margin_days, follow_days, buckets
        )
    return LogStats(log_uri, engine, window, counts, figures(counts, window))


def _counts_with_ray(files, filesystem, lead_days, end_margin_days, follow_days, buckets):
    """The Ray Data shell: events per block, users hashed into buckets, the core per bucket."""
    import ray.data

    from rl.cluster.ray_runtime import start_ray

    start_ray()
    parts = []
    for dataset, paths in files.items():
        if paths:
            columns, convert = _READERS[dataset]
            parts.append(
                ray.data.read_parquet(
                    paths, columns=columns, filesystem=filesystem, partitioning=None
                ).map_batches(
                    lambda table, convert=convert: _bucketed(convert(table), buckets),
                    batch_format="pyarrow",
                    batch_size=None,
                )
            )
    # Materialised once: the day range and the grouping both read it.
    events = (parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])).materialize()
    first_day, last_day = int(events.min("day")), int(events.max("day"))
    window = DiscoveryWindow(first_day, last_day, lead_days, end_margin_days, follow_days)

    def bucket_counts(group: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"counts": [pickle.dumps(behaviour_counts(group, window))]})

    grouped = events.groupby("bucket", num_partitions=min(buckets, 16))
    rows = grouped.map_groups(bucket_counts, batch_format="pandas").take_all()
    total = BehaviourCounts()
    total.return_days = _zeros(follow_days + 1)
    total.organic_return_days = _zeros(follow_days + 1)
    for row in rows:
        total = total + pickle.loads(row["counts"])
    return total, window


def _bucketed(events: pd.DataFrame, buckets: int) -> Any:
    """Events with their user's bucket, in one arrow schema for every dataset's blocks."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("user_id", pa.string()), ("day", pa.int64()), ("timestamp", pa.float64()),
            ("session_id", pa.string()), ("position", pa.int64()), ("track_id", pa.string()),
            ("skipped", pa.float64()), ("streamed", pa.bool_()), ("recommended", pa.bool_()),
            ("count", pa.int64()), ("bucket", pa.int64()),
        ]
    )  # fmt: skip
    hashes = pd.util.hash_pandas_object(events["user_id"], index=False).to_numpy()
    events = events.assign(bucket=(hashes % buckets).astype(np.int64))
    return pa.Table.from_pandas(events[schema.names], schema=schema, preserve_index=False)
