"""The served API's request and response models, written down once.

Where it sits: the FastAPI ingress (services/ingress.py) validates HTTP bodies with these
pydantic models and documents them in OpenAPI; the gRPC face (services/proto/encore.proto)
mirrors the same fields and is converted to these models, so both transports share one
validation. Limits that are not per-field (body size, the policy's k) live here too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rl.songs.catalog import FEATURE_COLUMNS

MAX_K = 50
"""Largest k the schema accepts; the served policy's own k (usually 4) is checked after."""
MAX_EXCLUDE = 500
"""Most track ids a request may exclude (each costs one extra kNN neighbour)."""
MAX_BODY_BYTES = 64 * 1024
"""Request bodies above this are refused with 413 before they are parsed."""
MAX_ID_LENGTH = 128
"""Longest user id, track id or request id accepted."""


class TrackFeatures(BaseModel):
    """The 11 raw Spotify audio features of a song (un-normalised, as in the catalog).

    Ranges are the Spotify API's; values outside them (or NaN/inf) are refused with 422.
    """

    model_config = ConfigDict(extra="forbid")

    danceability: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    energy: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    key: float = Field(ge=-1.0, le=11.0, allow_inf_nan=False, description="pitch class, -1 = none")
    loudness: float = Field(ge=-60.0, le=10.0, allow_inf_nan=False, description="dB")
    mode: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="1 major, 0 minor")
    speechiness: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    acousticness: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    instrumentalness: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    liveness: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    valence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    tempo: float = Field(ge=0.0, le=300.0, allow_inf_nan=False, description="beats per minute")

    def as_row(self) -> list[float]:
        """The features in the model's column order (rl.songs.catalog.FEATURE_COLUMNS)."""
        return [float(getattr(self, name)) for name in FEATURE_COLUMNS]


class RecommendRequest(BaseModel):
    """What to recommend next for a user: from the song playing (by id or by features)."""

    # "Exactly one of track_id or features" (the validator below), stated in the JSON
    # schema too, so the OpenAPI contract refuses what the service refuses.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["track_id"], "properties": {"track_id": {"type": "string"}}},
                {"required": ["features"], "properties": {"features": {"type": "object"}}},
            ]
        },
    )

    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="who is listening")
    track_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="catalog id of the song playing now (give this or `features`)",
    )
    features: TrackFeatures | None = Field(
        default=None,
        description="raw audio features of the song playing (a song not in the catalog)",
    )
    k: int = Field(default=4, ge=1, le=MAX_K, description="candidates to rank (<= the policy's k)")
    exclude: list[str] = Field(
        default_factory=list,
        max_length=MAX_EXCLUDE,
        description="track ids never to recommend (already played, blocked)",
    )
    mode: Literal["explore", "greedy", "sample"] = Field(
        default="explore",
        description="`explore` (the default) takes the policy's most probable candidate, or with "
        "the service's small probability epsilon a uniformly random one, logging the exact "
        "propensity; `greedy` always takes the most probable; `sample` draws from the policy",
    )
    session_id: str | None = Field(
        default=None, max_length=MAX_ID_LENGTH, description="listening session (default: user+day)"
    )

    @model_validator(mode="after")
    def _one_song(self) -> RecommendRequest:
        if (self.track_id is None) == (self.features is None):
            raise ValueError("give exactly one of track_id or features")
        return self


class Candidate(BaseModel):
    """One ranked candidate."""

    track_id: str
    score: float = Field(description="the policy's probability of picking this candidate")
    distance: float = Field(description="latent distance from the song playing")
    track_name: str | None = None
    track_artist: str | None = None


class RecommendResponse(BaseModel):
    """The ranked candidates, the pick, and what is needed to log the feedback."""

    request_id: str = Field(description="send it back with /v1/feedback")
    user_id: str
    candidates: list[Candidate] = Field(description="best first")
    chosen_track_id: str
    chosen_rank: int = Field(description="0-based rank of the pick in `candidates`")
    propensity: float = Field(description="probability the policy gave the pick (logged)")
    value: float | None = Field(description="critic's V(state); null for policies without one")
    mode: str
    model_version: str = Field(description="the policy version that answered")
    policy: str = Field(description="the policy's name")
    arm: str = Field(description="A/B arm of the user ('' when no test runs)")


class FeedbackRequest(BaseModel):
    """How the user responded to a recommendation."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    track_id: str = Field(
        min_length=1, max_length=MAX_ID_LENGTH, description="the track played: the pick"
    )
    listen_fraction: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    liked: bool = False
    skip_level: int = Field(
        ge=0, le=3, description="0 immediate skip, 1 early, 2 late, 3 played through"
    )


class FeedbackResponse(BaseModel):
    """Acknowledgement: the feedback is in the durable journal and will reach the log."""

    request_id: str
    accepted: bool
    reward: float
    listened: bool
    log_uri: str = Field(description="the decision log the row lands in")
    journal: str = Field(description="the local write-ahead journal holding it until written")


class PromoteRequest(BaseModel):
    """Admin: move the registry's production pointer."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    wait_s: float = Field(default=10.0, ge=0.0, le=120.0, description="wait for replicas to swap")


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    """Every refusal (services/errors.py): what is wrong, and the field at fault."""

    detail: str
    field: str | None = None
    errors: list[FieldError] | None = Field(
        default=None, description="every invalid field (validation failures only)"
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (404, "unknown track, request id or user"),
        (413, "body over 64 KiB"),
        (422, "invalid input (not JSON, not UTF-8, a field out of range), naming the field"),
    )
}
"""The refusals every data route documents (OpenAPI), in the shape they are answered in."""


class HealthResponse(BaseModel):
    status: str
    model_version: str
    pending_requests: int | None = Field(
        description="decisions awaiting feedback (null: a shared store does not count them)"
    )
    feedback: dict
    user_store: dict = Field(default_factory=dict, description="kind, users, pending")


class SongRelationship(BaseModel):
    track_id: str
    state: list[float] = Field(description="relationship state per beta at the start of today")
    last_listened_day: int = Field(description="days since the epoch (UTC)")


class UserResponse(BaseModel):
    """A listener's state as the service sees it (for debugging a recommendation)."""

    user_id: str
    taste: list[float] = Field(description="the taste latent the next observation will carry")
    listens: int = Field(description="listens (>= 30 s) the state has counted")
    betas: list[float] = Field(description="forgetting factors of the relationship states")
    relationships: list[SongRelationship] = Field(
        description="songs with a relationship, most recently listened first"
    )
    sessions: dict[str, int] = Field(description="next position per session id")
    recent_decisions: list[dict] = Field(description="latest decisions, newest first")


class ModelsResponse(BaseModel):
    serving: dict = Field(description="active version per answering Scorer replica")
    production_pointer: str | None
    versions: list[dict]
    refusals: list[dict] = Field(description="versions the Scorer refused to load, with why")
