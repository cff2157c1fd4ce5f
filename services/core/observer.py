"""What the request pipeline reports as it works (for metrics), with no Ray in sight.

Where it sits: ``RecommendationPipeline(observer=...)``; the Ingress passes
services/metrics.py ``ServeMetrics`` (Ray Serve's metrics API); tests and the in-process
baseline keep this no-op.
"""

from __future__ import annotations


class PipelineObserver:
    """What the request pipeline reports; the default records nothing."""

    def recommended(self, arms: list[str], versions: list[str]) -> None:
        pass

    def feedback(
        self, arm: str, version: str, listened: bool, skip_level: int, reward: float
    ) -> None:
        pass

    def store_call(self, op: str, seconds: float) -> None:
        pass
