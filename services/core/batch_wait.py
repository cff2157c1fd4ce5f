"""How long a ``@serve.batch`` waits for company: not at all for a lone request.

Where it sits: the Ingress (its recommendation batcher) and the Scorer set their batcher's
wait before each call from a ``LoneRequestWait``. A batch wait (2 ms at the Ingress, 1 ms at
the Scorer) buys throughput under load: concurrent requests share one Scorer call. A request
that arrives with nothing else in flight, while recent batches held one request each (a
client at concurrency 1), has no one to wait for, and the wait was pure latency: ~3 of a
lone request's ~8-11 ms. Under load the batches are large, so the wait stays as configured
and batching is unchanged; the first request after an idle spell starts at once and the
next ones, finding it in flight, wait again.
"""

from __future__ import annotations


class LoneRequestWait:
    """The batch wait to use for the next call.

    Parameters
    ----------
    wait_s : the configured wait, used whenever the request may have company. >= 0.
    enabled : False keeps ``wait_s`` always (Serve's plain behaviour).
    smoothing : weight of the newest batch in the running mean of batch sizes, in (0, 1].
    """

    LONE_BATCH_MEAN = 1.5
    """Below this running mean of batch sizes, recent traffic came one request at a time."""

    def __init__(self, wait_s: float, enabled: bool = True, smoothing: float = 0.2) -> None:
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.wait_s = wait_s
        self.enabled = enabled
        self.smoothing = smoothing
        self.mean_batch_size = 1.0

    def observe(self, batch_size: int) -> None:
        """Record the size of a batch just formed."""
        self.mean_batch_size += self.smoothing * (batch_size - self.mean_batch_size)

    def wait_for(self, in_flight: int) -> float:
        """The wait for a call made while ``in_flight`` calls (this one included) are open."""
        alone = in_flight <= 1 and self.mean_batch_size < self.LONE_BATCH_MEAN
        return 0.0 if self.enabled and alone else self.wait_s
