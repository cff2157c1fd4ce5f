"""``GET /v1/users/{user_id}``: a listener's state as the service sees it.

Where it sits: the ingress's route calls ``user_view`` with its pipeline; it reads the
``UserStore`` (either kind) and shows the state the next observation would carry: the
taste, each related song's relationship state rolled forward to today, the session
positions and the latest decisions. 404 for a listener the store has never seen.
"""

from __future__ import annotations

from services.core.request_pipeline import NotFoundError, RecommendationPipeline
from services.core.user_state import day_of
from services.schemas import SongRelationship, UserResponse

MAX_RELATIONSHIPS_SHOWN = 200


async def user_view(pipeline: RecommendationPipeline, user_id: str) -> UserResponse:
    store = pipeline.store
    state = await store.user(user_id)
    if state is None:
        raise NotFoundError("user_id", f"unknown user {user_id!r} (no decision or listen yet)")
    today = day_of(pipeline.clock())
    tracks = list(reversed(state.relationships))[:MAX_RELATIONSHIPS_SHOWN]
    states = store.relationship_now(state, tracks, today)
    return UserResponse(
        user_id=user_id,
        taste=[float(v) for v in state.taste],
        listens=state.listens,
        betas=[float(b) for b in store.betas],
        relationships=[
            SongRelationship(
                track_id=track,
                state=[float(v) for v in states[i]],
                last_listened_day=state.relationships[track].day,
            )
            for i, track in enumerate(tracks)
        ],
        sessions=dict(state.positions),
        recent_decisions=list(reversed(state.recent)),
    )
