"""Application metrics through Ray Serve's metrics API, exported on Ray's Prometheus endpoint.

Where it sits: the Ingress builds a ``ServeMetrics`` and hands it to the request pipeline
as its observer (the pipeline itself stays free of Ray: ``PipelineObserver`` is a no-op);
the Scorer sets the version gauge. Ray adds the ``ray_`` prefix and its own tags
(deployment, replica, application); counters end in ``_total``. Queries and a Grafana
dashboard: services/grafana_dashboard.json and the README's "Serving" section.

Names (all tagged as listed):
    encore_recommendations       arm, model_version        recommendations answered
    encore_feedback              arm, model_version        feedback accepted
    encore_streams               arm, model_version        feedback that counted as a listen
    encore_skips                 arm, model_version        feedback with skip_level < 2
    encore_reward_gain / _loss   arm, model_version        sums of positive / |negative| rewards
    encore_store_latency_ms      op, store                 histogram of user-store calls
    encore_shed_requests         transport                 requests refused by load shedding
    encore_serving_version       version (+ Serve's replica) 1 for the version a Scorer serves
"""

from __future__ import annotations

from typing import Any

from services.core.observer import PipelineObserver

STORE_LATENCY_BOUNDARIES_MS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250]


class ServeMetrics(PipelineObserver):
    """``PipelineObserver`` onto ``ray.serve.metrics`` (call inside a Serve replica)."""

    def __init__(self, store_kind: str) -> None:
        from ray.serve import metrics as serve_metrics

        metrics: Any = serve_metrics  # its stubs type tag_keys as a 1-tuple

        by_arm = ("arm", "model_version")
        self.store_kind = store_kind
        self.recommendations = metrics.Counter(
            "encore_recommendations", "recommendations answered", tag_keys=by_arm
        )
        self.feedbacks = metrics.Counter("encore_feedback", "feedback accepted", tag_keys=by_arm)
        self.streams = metrics.Counter(
            "encore_streams", "feedback counted as a listen (>= 30 s)", tag_keys=by_arm
        )
        self.skips = metrics.Counter(
            "encore_skips", "feedback with skip_level < 2", tag_keys=by_arm
        )
        # A Counter only goes up and a Histogram takes positive boundaries only: the
        # reward's positive and negative parts are two counters (mean = (gain - loss) / feedback).
        self.reward_gain = metrics.Counter(
            "encore_reward_gain", "sum of the positive rewards of feedback", tag_keys=by_arm
        )
        self.reward_loss = metrics.Counter(
            "encore_reward_loss", "sum of |negative rewards| of feedback", tag_keys=by_arm
        )
        self.store_latency = metrics.Histogram(
            "encore_store_latency_ms",
            "user-store call latency",
            boundaries=STORE_LATENCY_BOUNDARIES_MS,
            tag_keys=("op", "store"),
        )
        self.shed = metrics.Counter(
            "encore_shed_requests", "requests refused by load shedding", tag_keys=("transport",)
        )

    @staticmethod
    def _tags(arm: str, version: str) -> dict[str, str]:
        return {"arm": arm or "production", "model_version": version}

    def recommended(self, arms: list[str], versions: list[str]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for key in zip(arms, versions, strict=True):
            counts[key] = counts.get(key, 0) + 1
        for (arm, version), n in counts.items():
            self.recommendations.inc(n, tags=self._tags(arm, version))

    def feedback(
        self, arm: str, version: str, listened: bool, skip_level: int, reward: float
    ) -> None:
        tags = self._tags(arm, version)
        self.feedbacks.inc(1, tags=tags)
        if listened:
            self.streams.inc(1, tags=tags)
        if skip_level < 2:
            self.skips.inc(1, tags=tags)
        if reward > 0:
            self.reward_gain.inc(reward, tags=tags)
        elif reward < 0:
            self.reward_loss.inc(-reward, tags=tags)

    def store_call(self, op: str, seconds: float) -> None:
        self.store_latency.observe(seconds * 1000.0, tags={"op": op, "store": self.store_kind})

    def shed_request(self, transport: str) -> None:
        self.shed.inc(1, tags={"transport": transport})


class VersionGauge:
    """The version a Scorer replica serves: 1 for it, 0 for the one it replaced. (Serve adds
    the ``replica`` and ``deployment`` tags itself.)"""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.gauge = metrics.Gauge(
            "encore_serving_version", "1 for the version this replica serves", tag_keys=("version",)
        )
        self.current: str | None = None

    def show(self, version: str) -> None:
        if version == self.current:
            return
        if self.current is not None:
            self.gauge.set(0, tags={"version": self.current})
        self.gauge.set(1, tags={"version": version})
        self.current = version
