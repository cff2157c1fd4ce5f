"""The decision-log row of an answered served decision (split out of the request pipeline).

Where it sits: ``RecommendationPipeline.feedback`` (services/core/request_pipeline.py) builds
the row here and journals it (services/core/feedback_journal.py); the schema and its rules
are rl/feedback/schema.py's, the builder rl/feedback/rows.py's.
"""

from __future__ import annotations

from typing import Any

from rl.feedback.rows import decision_row as build_decision_row
from services.core.user_state import PendingDecision, day_of, hour_and_weekday
from services.schemas import FeedbackRequest


def decision_row(
    decision: PendingDecision, feedback: FeedbackRequest, listened: bool, reward: float
) -> dict[str, Any]:
    """The decision-log row (rl/feedback/schema.py DECISION_SCHEMA) of an answered decision;
    ``candidate_sources`` is set when the decision's pool was multi-source."""
    hour, weekday = hour_and_weekday(decision.timestamp)
    return build_decision_row(
        user_id=decision.user_id,
        session_id=decision.session_id,
        day=day_of(decision.timestamp),
        position=decision.position,
        timestamp=decision.timestamp,
        hour=hour,
        weekday=weekday,
        current_track_id=decision.current_track_id,
        candidate_track_ids=decision.candidate_track_ids,
        candidate_relationship=decision.candidate_relationship,
        user_taste=decision.user_taste,
        chosen_index=decision.chosen_index,
        behaviour_logp=decision.behaviour_logp,
        listened=listened,
        listen_fraction=feedback.listen_fraction,
        liked=feedback.liked,
        skip_level=feedback.skip_level,
        reward=reward,
        source="service",
        policy_version=decision.policy_version,
        arm=decision.arm,
        request_id=decision.request_id,
        candidate_sources=decision.candidate_sources,
    )
