"""The service's multi-source candidate pool (services/core/served_pool.py): the request
pipeline builds it from the Retriever (song and taste kNN), the user store's relationship
songs and the song table, and the log row records each candidate's source."""

import asyncio

import numpy as np
import pytest

from rl.decision.candidate_pool import CandidatePoolConfig
from rl.feedback.log import read_decisions_table, read_quarantine
from services.assembly import load_served_songs
from services.config import ServiceConfig
from services.core.served_pool import ServedCandidatePool
from services.schemas import FeedbackRequest
from tests.services.test_request_pipeline import make_pipeline, recommend

POOL = CandidatePoolConfig(quotas=(("song", 2), ("taste", 1), ("relationship", 1)))


@pytest.fixture(scope="module")
def songs(small_embedding_uri):
    config = ServiceConfig(embedding_uri=small_embedding_uri, registry_uri="", seed=0)
    return load_served_songs(config)


@pytest.fixture()
def pooled(songs, small_embedding_uri, tmp_path):
    pipe, hops = make_pipeline(songs, small_embedding_uri, tmp_path)
    _, catalog = songs
    pipe.candidate_pool = ServedCandidatePool(POOL, catalog, pipe.store, hops.retrieve)
    yield pipe, hops
    pipe.sink.close()


def _listen(pipe, answer):
    body = FeedbackRequest(
        request_id=answer.request_id, track_id=answer.chosen_track_id, listen_fraction=1.0,
        liked=False, skip_level=3,
    )  # fmt: skip
    assert asyncio.run(pipe.feedback(body)).listened


def test_pool_sources_reach_the_log_and_a_known_song_resurfaces(pooled, songs, tmp_path):
    pipe, hops = pooled
    embedding, catalog = songs
    playing = str(embedding.track_ids[5])
    (first,) = recommend(pipe, {"user_id": "fan", "track_id": playing, "k": 4, "mode": "greedy"})
    ids = [c.track_id for c in first.candidates]
    assert len(ids) == 4 and len(set(ids)) == 4 and playing not in ids
    # A new user has no relationship: its slot is backfilled by the song's kNN (below).
    _listen(pipe, first)
    # Next request from another song: the listened song comes back as "relationship"
    # unless an earlier source already took it (first source wins).
    other = str(embedding.track_ids[40])
    (second,) = recommend(pipe, {"user_id": "fan", "track_id": other, "k": 4, "mode": "greedy"})
    assert first.chosen_track_id in [c.track_id for c in second.candidates]
    _listen(pipe, second)
    pipe.sink.close()
    rows = read_decisions_table(str(tmp_path / "log")).to_pylist()
    assert read_quarantine(str(tmp_path / "log")) == []
    assert len(rows) == 2
    assert rows[0]["candidate_sources"].count("relationship") == 0
    assert sorted(rows[0]["candidate_sources"]) == ["song", "song", "song", "taste"]
    assert "relationship" in rows[1]["candidate_sources"] or (
        first.chosen_track_id in rows[1]["candidate_track_ids"][:3]
    )
    # The pool's song and taste lists are Retriever answers / cache lookups, the latter
    # in one batched Retriever call per batch.
    assert hops.calls["retrieve"] == 2


def test_pool_k_must_match_the_policy(pooled, songs):
    pipe, hops = pooled
    _, catalog = songs
    big = CandidatePoolConfig(quotas=(("song", 6), ("taste", 4)))
    with pytest.raises(ValueError, match="the candidate pool has k=10"):
        type(pipe)(
            pipe.layout, catalog, pipe.store, pipe.sink, hops.embed, hops.retrieve, hops.score,
            candidate_pool=ServedCandidatePool(big, catalog, pipe.store, hops.retrieve),
        )  # fmt: skip


def test_popular_and_sticky_come_from_the_song_table(songs, small_embedding_uri, tmp_path):
    from types import SimpleNamespace

    pipe, hops = make_pipeline(songs, small_embedding_uri, tmp_path)
    embedding, catalog = songs
    n = len(catalog.track_ids)
    listens = np.zeros(n, np.int64)
    listens[[7, 8]] = 50
    stickiness = np.zeros(n, np.float32)
    stickiness[9] = 3.0
    table = SimpleNamespace(
        popularity=np.log1p(listens).astype(np.float32), listens=listens,
        stickiness=stickiness, discoveries=(stickiness > 0).astype(np.int64),
    )  # fmt: skip
    table.aligned = lambda ids: table
    config = CandidatePoolConfig(quotas=(("song", 2), ("popular", 1), ("sticky", 1)), explore_top=2)
    pipe.candidate_pool = ServedCandidatePool(config, catalog, pipe.store, hops.retrieve, table)
    playing = str(embedding.track_ids[100])
    answers = recommend(
        pipe, *[{"user_id": f"u{i}", "track_id": playing, "k": 4} for i in range(6)]
    )
    wanted = {str(embedding.track_ids[r]) for r in (7, 8, 9)}
    for answer in answers:
        assert len(wanted & {c.track_id for c in answer.candidates}) == 2
    pipe.sink.close()


def test_the_service_config_turns_the_pool_on(songs, small_embedding_uri, tmp_path):
    from services.config import ServiceConfig

    pipe, _ = make_pipeline(songs, small_embedding_uri, tmp_path, candidate_pool=POOL.spec())
    assert pipe.candidate_pool is not None and pipe.candidate_pool.config.quotas == POOL.quotas
    assert pipe.candidate_pool.top["popular"].size == 0  # no production version: no table
    pipe.sink.close()
    with pytest.raises(ValueError, match="candidate_pool has k=10, the served k=4"):
        ServiceConfig(candidate_pool="song=6,taste=4")
    plain, _ = make_pipeline(songs, small_embedding_uri, tmp_path / "b")
    assert plain.candidate_pool is None  # the default: today's kNN pool
    plain.sink.close()
