"""A small Python client for Encore's gRPC API (Ray Serve's gRPC proxy).

Usage::

    from services.grpc_client import EncoreClient

    with EncoreClient("127.0.0.1:9000") as client:
        answer = client.recommend("alice", track_id="0sf12qNH5qcw8qpgymFOqD", k=4)
        client.feedback(answer.request_id, answer.chosen_track_id, listen_fraction=0.9,
                        liked=True, skip_level=3)

Errors arrive as ``grpc.RpcError``: NOT_FOUND (unknown track or request id) and
INVALID_ARGUMENT (a field out of range), with the reason in ``details()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from services.proto import encore_pb2, encore_pb2_grpc


class EncoreClient:
    """Blocking client; ``app_name`` is the Serve application that answers (metadata)."""

    def __init__(self, target: str, app_name: str = "encore", timeout_s: float = 10.0) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = encore_pb2_grpc.RecommenderStub(self.channel)
        self.metadata = (("application", app_name),)
        self.timeout_s = timeout_s

    def recommend(
        self,
        user_id: str,
        track_id: str | None = None,
        features: Mapping[str, float] | None = None,
        k: int | None = None,
        exclude: Sequence[str] = (),
        mode: str = "explore",
        session_id: str = "",
    ) -> Any:
        request = encore_pb2.RecommendRequest(
            user_id=user_id,
            track_id=track_id or "",
            exclude=list(exclude),
            mode=mode,
            session_id=session_id,
        )
        if features is not None:
            request.features.CopyFrom(encore_pb2.TrackFeatures(**dict(features)))
        if k is not None:
            request.k = k
        return self.stub.Recommend(request, metadata=self.metadata, timeout=self.timeout_s)

    def feedback(
        self,
        request_id: str,
        track_id: str,
        listen_fraction: float,
        skip_level: int,
        liked: bool = False,
    ) -> Any:
        request = encore_pb2.FeedbackRequest(
            request_id=request_id,
            track_id=track_id,
            listen_fraction=listen_fraction,
            liked=liked,
            skip_level=skip_level,
        )
        return self.stub.Feedback(request, metadata=self.metadata, timeout=self.timeout_s)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> EncoreClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
