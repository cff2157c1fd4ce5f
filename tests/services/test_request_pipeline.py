"""The request pipeline without Ray: the real cores behind the pipeline's async hops.

``RecommendationPipeline`` (services/core/request_pipeline.py) is pure asyncio and numpy; the
Serve ingress only hands it Serve handles as its hops. Here the hops are the Embedder,
Retriever and Scorer cores called in-process (as the in-process baseline calls them),
wrapped to count calls, over a small real embedding, a real user-state store and a real
feedback sink writing parquet under a tmp dir.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import numpy as np
import pytest

from rl.feedback.log import read_decisions_table, read_quarantine
from rl.songs.retrieval import KnnIndex
from services.assembly import assemble_pipeline, load_served_songs
from services.config import ServiceConfig
from services.core.request_pipeline import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RecommendationPipeline,
)
from services.core.user_state import day_of
from services.retriever import neighbours
from services.schemas import FeedbackRequest, RecommendRequest, RecommendResponse
from services.scorer import build_scoring_core

FEATURES = {
    "danceability": 0.6, "energy": 0.7, "key": 5, "loudness": -6.0, "mode": 1,
    "speechiness": 0.05, "acousticness": 0.1, "instrumentalness": 0.0, "liveness": 0.1,
    "valence": 0.5, "tempo": 120.0,
}  # fmt: skip


class LocalHops:
    """The Embedder, Retriever and Scorer cores behind the pipeline's async interface
    (the one the Serve handles implement), counting calls and batch sizes."""

    def __init__(self, embedding: Any, config: ServiceConfig) -> None:
        self.embedding = embedding
        self.index = KnnIndex(embedding.latents, embedding.track_ids.tolist())
        self.core = build_scoring_core(config, embedding.latents, embedding.track_ids)
        self.calls: Counter[str] = Counter()
        self.score_batches: list[int] = []

    async def embed(self, raw: np.ndarray) -> np.ndarray:
        self.calls["embed"] += 1
        return self.embedding.encode(raw).astype(np.float32)

    async def retrieve(self, latents: np.ndarray, k: int, excludes: list[list[str]]) -> Any:
        self.calls["retrieve"] += 1
        return neighbours(self.index, latents, k, excludes)

    async def score(self, obs: np.ndarray, modes: list[str], arms: list[str]) -> Any:
        self.calls["score"] += 1
        self.score_batches.append(len(obs))
        return self.core.score(obs, modes, arms)


@pytest.fixture(scope="module")
def songs(small_embedding_uri):
    config = ServiceConfig(embedding_uri=small_embedding_uri, registry_uri="", seed=0)
    return load_served_songs(config)


def make_pipeline(
    songs, small_embedding_uri, tmp_path, **settings: Any
) -> tuple[RecommendationPipeline, LocalHops]:
    config = ServiceConfig(
        embedding_uri=small_embedding_uri,
        registry_uri=str(tmp_path / "registry"),  # empty: the logging policy answers
        log_uri=str(tmp_path / "log"),
        journal_dir=str(tmp_path / "journal"),
        flush_interval_s=60.0,
        fsync=False,
        seed=0,
        **settings,
    )
    embedding, catalog = songs
    hops = LocalHops(embedding, config)
    pipeline = assemble_pipeline(
        config, catalog, embed=hops.embed, retrieve=hops.retrieve, score=hops.score
    )
    return pipeline, hops


@pytest.fixture()
def pipeline(songs, small_embedding_uri, tmp_path):
    made, hops = make_pipeline(songs, small_embedding_uri, tmp_path)
    yield made, hops
    made.sink.close()


def recommend(pipeline: RecommendationPipeline, *bodies: dict[str, Any]) -> list[Any]:
    requests = [RecommendRequest.model_validate(body) for body in bodies]
    return asyncio.run(pipeline.recommend_batch(requests))


def test_a_catalog_track_is_answered_with_one_hop_and_its_exact_neighbours(pipeline, songs):
    pipe, hops = pipeline
    embedding, _ = songs
    track = str(embedding.track_ids[10])
    (answer,) = recommend(pipe, {"user_id": "u", "track_id": track, "mode": "sample"})
    assert isinstance(answer, RecommendResponse)
    assert hops.calls == Counter(score=1)  # latent and candidates come from the ingress's tables

    exact = neighbours(hops.index, embedding.latents[[10]], 4, [[track]])[0]
    assert sorted(c.track_id for c in answer.candidates) == sorted(exact[0])
    scores = [c.score for c in answer.candidates]
    assert scores == sorted(scores, reverse=True) and np.isclose(sum(scores), 1.0, atol=1e-5)
    chosen = next(c for c in answer.candidates if c.track_id == answer.chosen_track_id)
    assert answer.candidates[answer.chosen_rank].track_id == answer.chosen_track_id
    assert np.isclose(answer.propensity, chosen.score, rtol=1e-4)
    assert answer.model_version == "logging"
    assert track not in [c.track_id for c in answer.candidates]


def test_the_neighbour_table_and_the_retriever_give_the_same_candidates(
    songs, small_embedding_uri, tmp_path
):
    cached, _ = make_pipeline(songs, small_embedding_uri, tmp_path / "a")
    uncached, hops = make_pipeline(
        songs, small_embedding_uri, tmp_path / "b", neighbour_cache_width=0
    )
    tracks = [str(t) for t in songs[0].track_ids[:20]]
    bodies = [{"user_id": f"u{i}", "track_id": t, "mode": "greedy"} for i, t in enumerate(tracks)]
    for a, b in zip(recommend(cached, *bodies), recommend(uncached, *bodies), strict=True):
        assert [c.track_id for c in a.candidates] == [c.track_id for c in b.candidates]
        np.testing.assert_allclose(
            [c.distance for c in a.candidates], [c.distance for c in b.candidates], rtol=1e-5
        )
        assert a.chosen_track_id == b.chosen_track_id
    assert hops.calls == Counter(retrieve=1, score=1)  # one batch: one call per hop
    cached.sink.close()
    uncached.sink.close()


def test_raw_features_go_through_the_embedder_and_the_retriever(pipeline, songs):
    pipe, hops = pipeline
    (answer,) = recommend(pipe, {"user_id": "u", "features": FEATURES})
    assert isinstance(answer, RecommendResponse) and len(answer.candidates) == 4
    assert hops.calls == Counter(embed=1, retrieve=1, score=1)
    latent = songs[0].encode(np.asarray([list(FEATURES.values())], np.float64))
    exact = neighbours(hops.index, latent.astype(np.float32), 4, [[]])[0]
    assert sorted(c.track_id for c in answer.candidates) == sorted(exact[0])


def test_refused_requests_get_their_error_in_their_slot_and_the_rest_is_answered(pipeline, songs):
    pipe, hops = pipeline
    track = str(songs[0].track_ids[3])
    answers = recommend(
        pipe,
        {"user_id": "u", "track_id": "not-a-track"},
        {"user_id": "u", "track_id": track, "k": 5},  # above the served policy's k=4
        {"user_id": "u", "track_id": track, "k": 2, "exclude": [str(songs[0].track_ids[4])]},
    )
    assert isinstance(answers[0], NotFoundError) and answers[0].field == "track_id"
    assert isinstance(answers[1], InvalidInputError) and answers[1].field == "k"
    assert isinstance(answers[2], RecommendResponse) and len(answers[2].candidates) == 2
    assert str(songs[0].track_ids[4]) not in [c.track_id for c in answers[2].candidates]
    assert hops.score_batches == [1]  # only the valid request was scored


def test_positions_count_up_within_a_session(pipeline, songs):
    pipe, _ = pipeline
    track = str(songs[0].track_ids[0])
    bodies = [{"user_id": "u", "track_id": track, "session_id": "s1"}] * 3
    answers = recommend(pipe, *bodies)
    positions = [asyncio.run(pipe.store.claim(a.request_id)).position for a in answers]
    assert positions == [0, 1, 2]


def test_feedback_logs_a_valid_row_and_moves_the_listeners_state(pipeline, songs, tmp_path):
    pipe, _ = pipeline
    embedding, catalog = songs
    (answer,) = recommend(pipe, {"user_id": "fan", "track_id": str(embedding.track_ids[5])})
    taste_before = asyncio.run(pipe.store.user("fan")).taste.copy()
    body = FeedbackRequest(
        request_id=answer.request_id,
        track_id=answer.chosen_track_id,
        listen_fraction=1.0,
        liked=True,
        skip_level=3,
    )
    ack = asyncio.run(pipe.feedback(body))
    assert ack.accepted and ack.listened and ack.reward > 0

    chosen_latent = catalog.latents[catalog.row_of[answer.chosen_track_id]]
    after = asyncio.run(pipe.store.user("fan"))
    rate = pipe.store.taste_rate
    np.testing.assert_allclose(
        after.taste, (1 - rate) * taste_before + rate * chosen_latent, rtol=1e-5
    )
    tomorrow = day_of(pipe.clock()) + 1
    relationship = pipe.store.relationship_now(after, [answer.chosen_track_id], tomorrow)
    assert np.all(relationship > 0)  # s = (1 - beta) * 1 after a listened day

    pipe.sink.close()
    table = read_decisions_table(str(tmp_path / "log"))
    assert read_quarantine(str(tmp_path / "log")) == []
    (row,) = table.to_pylist()
    assert row["request_id"] == answer.request_id and row["source"] == "service"
    assert row["chosen_track_id"] == answer.chosen_track_id
    assert row["candidate_track_ids"][row["chosen_index"]] == answer.chosen_track_id
    assert np.isclose(np.exp(row["behaviour_logp"]), answer.propensity, rtol=1e-5)
    np.testing.assert_allclose(row["user_taste"], taste_before, rtol=1e-6)


def test_feedback_is_refused_for_the_wrong_track_and_accepted_once(pipeline, songs):
    pipe, _ = pipeline
    (answer,) = recommend(pipe, {"user_id": "u", "track_id": str(songs[0].track_ids[7])})
    other = next(c.track_id for c in answer.candidates if c.track_id != answer.chosen_track_id)

    def feedback(track_id: str) -> Any:
        body = FeedbackRequest(
            request_id=answer.request_id, track_id=track_id, listen_fraction=0.2, skip_level=1
        )
        return asyncio.run(pipe.feedback(body))

    with pytest.raises(ConflictError, match="is not the pick"):
        feedback(other)
    assert feedback(answer.chosen_track_id).accepted  # the refusal did not consume it
    with pytest.raises(NotFoundError, match="unknown request id"):
        feedback(answer.chosen_track_id)


def test_a_failed_journal_write_gives_the_decision_back(pipeline, songs, monkeypatch):
    pipe, _ = pipeline
    (answer,) = recommend(pipe, {"user_id": "u", "track_id": str(songs[0].track_ids[8])})
    body = FeedbackRequest(
        request_id=answer.request_id,
        track_id=answer.chosen_track_id,
        listen_fraction=0.9,
        skip_level=3,
    )

    def disk_full(row: dict[str, Any]) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(pipe.sink, "append", disk_full)
        with pytest.raises(OSError):
            asyncio.run(pipe.feedback(body))
    assert asyncio.run(pipe.feedback(body)).accepted  # given back: the retry lands
