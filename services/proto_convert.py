"""gRPC messages (services/proto/encore.proto) <-> the pydantic models of services/schemas.py.

Where it sits: the ingress's gRPC methods convert here, then validate and answer exactly as
the HTTP routes do (same models, same pipeline).
"""

from __future__ import annotations

from typing import Any

from services.proto import encore_pb2
from services.schemas import FeedbackRequest, RecommendRequest, RecommendResponse


def recommend_from_proto(message: Any) -> RecommendRequest:
    """gRPC RecommendRequest -> the validated pydantic model (raises ValidationError)."""
    body: dict[str, Any] = {"user_id": message.user_id, "exclude": list(message.exclude)}
    if message.track_id:
        body["track_id"] = message.track_id
    if message.HasField("features"):
        body["features"] = {
            f.name: getattr(message.features, f.name) for f in message.features.DESCRIPTOR.fields
        }
    if message.HasField("k"):
        body["k"] = message.k
    if message.mode:
        body["mode"] = message.mode
    if message.session_id:
        body["session_id"] = message.session_id
    return RecommendRequest.model_validate(body)


def recommend_to_proto(response: RecommendResponse) -> Any:
    fields = response.model_dump(exclude={"candidates", "value"})
    message = encore_pb2.RecommendResponse(**fields)
    for candidate in response.candidates:
        message.candidates.add(
            track_id=candidate.track_id,
            score=candidate.score,
            distance=candidate.distance,
            track_name=candidate.track_name or "",
            track_artist=candidate.track_artist or "",
        )
    if response.value is not None:
        message.value = response.value
    return message


def feedback_from_proto(message: Any) -> FeedbackRequest:
    """gRPC FeedbackRequest -> the validated pydantic model (raises ValidationError)."""
    return FeedbackRequest(
        request_id=message.request_id,
        track_id=message.track_id,
        listen_fraction=message.listen_fraction,
        liked=message.liked,
        skip_level=message.skip_level,
    )
