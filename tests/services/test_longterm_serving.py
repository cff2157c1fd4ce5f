"""Long-term arms in the served app, for real: an A/B split over production, a stickiness
Q-scorer and their blend, checked over HTTP against an independent rl/longterm fit.

A small history is simulated (rl/simulator, 300 users x 40 days on the 2,000-track test
embedding) and written to a feedback log; the app is started with ``serve.run`` and an
A/B test over ``production`` (the logging policy, then a promoted registry version),
``q-personalised`` and ``blend``; the Scorer fits the Q-scorer on the log at startup.
The test fits the same models in-process (pyarrow reader) and checks every answer and
every logged feedback row (read back with ``ray.data.read_parquet``) against them.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests.services.conftest import app_config, wait_until_written

N_USERS, N_DAYS = 300, 40
LONGTERM_MODEL = {"horizon_days": 21, "clickiness_epochs": 2, "clickiness_hidden_units": 16}
"""A 21-day return window so a 40-day history has discoveries with full windows."""
TEMPERATURE, WEIGHT = 0.5, 0.5
AB_ARMS = {"production": 1.0, "q-personalised": 1.0, "blend": 1.0}
N_REQUESTS = 45
Q_VERSION = "longterm:personalised"


@pytest.fixture(scope="module")
def history(small_embedding_uri, tmp_path_factory):
    """The simulated log, the served embedding, and the long-term models fitted on the log
    in-process (the independent reference for the Scorer's fit)."""
    from rl.decision.observation import ObservationLayout
    from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy, latent_scale_of
    from rl.feedback.log import FeedbackLogWriter
    from rl.longterm.fitted_models import ModelConfig, fit_longterm_models
    from rl.simulator import Simulator, SimulatorConfig, build_corpus
    from rl.songs.embedding import load_song_embedding

    embedding = load_song_embedding(small_embedding_uri)
    layout = ObservationLayout()
    corpus = build_corpus(
        embedding.latents, embedding.track_ids, layout.k, SimulatorConfig(),
        np.random.default_rng(0),
    )  # fmt: skip
    logging_policy = MyopicListenPolicy(
        ListenProbabilityModel(layout, latent_scale_of(corpus.latents))
    )
    simulator = Simulator(corpus, N_USERS, logging_policy, layout, seed=0)
    log_uri = str(tmp_path_factory.mktemp("history") / "log")
    with FeedbackLogWriter(log_uri) as writer:
        simulator.run(N_DAYS, writer)
    models = fit_longterm_models(
        log_uri, embedding.track_ids, embedding.latents, layout.betas,
        ModelConfig(**LONGTERM_MODEL), engine="pyarrow",
    )  # fmt: skip
    _, inverse, counts = np.unique(
        embedding.latents, axis=0, return_inverse=True, return_counts=True
    )
    latent_counts = dict(zip(embedding.track_ids, counts[inverse.reshape(-1)], strict=True))
    return {
        "log_uri": log_uri, "embedding": embedding, "layout": layout, "models": models,
        "latent_counts": latent_counts,
    }  # fmt: skip


def reference_q_probabilities(history, rows) -> tuple[np.ndarray, np.ndarray]:
    """(B, k) personalised Q-scores and their served softmax, computed from logged rows
    with rl/longterm alone: the stickiness user features beyond the taste (the activity
    share) at their mean over the discovery dataset, as a served user has no history."""
    from rl.decision.observation import encode_context
    from rl.decision.policies import masked_softmax
    from rl.longterm.q_scoring import CandidateBatch

    embedding, layout, models = history["embedding"], history["layout"], history["models"]
    row_of = {t: i for i, t in enumerate(embedding.track_ids)}
    k, n_betas = layout.k, layout.n_betas
    items = np.full((len(rows), k), -1, np.int64)
    relationship = np.zeros((len(rows), k, n_betas), np.float32)
    for b, row in enumerate(rows.itertuples()):
        n = len(row.candidate_track_ids)
        items[b, :n] = [row_of[t] for t in row.candidate_track_ids]
        relationship[b, :n] = np.asarray(row.candidate_relationship).reshape(n, n_betas)
    mask = items >= 0
    taste = np.stack(rows["user_taste"].to_numpy()).astype(np.float32)
    activity = models.discoveries.taste[:, layout.latent_dim :].mean(axis=0)
    batch = CandidateBatch(
        user_taste=taste,
        user_features=np.concatenate([taste, np.tile(activity, (len(rows), 1))], axis=1),
        context=encode_context(rows["hour"].to_numpy(), rows["weekday"].to_numpy()),
        candidate_items=items,
        candidate_latents=embedding.latents[np.maximum(items, 0)] * mask[..., None],
        candidate_relationship=relationship,
        candidate_mask=mask,
    )
    scores = models.scorers()["personalised"].score(batch)
    return scores, masked_softmax(np.log(np.maximum(scores, 1e-9)) / TEMPERATURE, mask)


def distinct_songs(history, candidate_ids) -> bool:
    """True when no candidate shares its latent with another catalog track.

    The served Q-scorer sees candidate latents, not ids (the observation carries no ids),
    and maps each latent back to one catalog row: tracks with identical audio features
    (the same recording under two ids) share that row's item terms. The reference scores
    by id, so the two agree exactly only on candidates whose latent is unique.
    """
    counts = history["latent_counts"]
    return all(counts[t] == 1 for t in candidate_ids)


def over_distinct_songs(history, logged, ids: list[str]) -> list[tuple[int, str, list[str]]]:
    """(row of ``logged``, request id, candidate track ids) of the decisions whose
    candidates are all distinct songs: those the reference can be compared on exactly."""
    rows = [(b, r, list(logged.iloc[b]["candidate_track_ids"])) for b, r in enumerate(ids)]
    return [(b, r, candidates) for b, r, candidates in rows if distinct_songs(history, candidates)]


def served_probabilities(response: dict, candidate_ids: list[str]) -> np.ndarray:
    by_id = {c["track_id"]: c["score"] for c in response["candidates"]}
    return np.asarray([by_id[t] for t in candidate_ids])


# -- the served arm's core, without Ray ----------------------------------------------------------
def test_served_q_arm_is_the_fitted_scorer(history, rng):
    """The arm the Scorer serves ranks like rl/longterm's scorer (regression: the served
    observation lacks the activity feature the stickiness vectors were fitted with)."""
    import pandas as pd

    from rl.decision.policies import candidate_mask
    from services.core.longterm_arms import longterm_arms_from_models
    from services.core.user_state import build_observations

    layout, embedding = history["layout"], history["embedding"]
    (arm,) = longterm_arms_from_models(
        history["models"], layout, ["personalised"], TEMPERATURE
    ).values()
    assert arm.version == Q_VERSION and arm.name == "q-personalised"
    songs = [t for t in embedding.track_ids if history["latent_counts"][t] == 1]
    rows = pd.DataFrame(
        {
            "candidate_track_ids": [
                list(rng.choice(songs, size=n, replace=False)) for n in (4, 4, 2)
            ],
            "user_taste": list(rng.normal(size=(3, 5)).astype(np.float32)),
            "hour": [0, 9, 23],
            "weekday": [0, 3, 6],
        }
    )
    rows["candidate_relationship"] = [
        rng.uniform(0, 1, size=len(ids) * layout.n_betas) * (i == 1)  # one user with history
        for i, ids in enumerate(rows["candidate_track_ids"])
    ]
    row_of = {t: i for i, t in enumerate(embedding.track_ids)}
    obs = build_observations(
        layout,
        np.zeros((3, 5), np.float32),
        np.stack(rows["user_taste"].to_numpy()),
        rows["hour"].to_numpy(),
        rows["weekday"].to_numpy(),
        [embedding.latents[[row_of[t] for t in ids]] for ids in rows["candidate_track_ids"]],
        [np.reshape(r, (-1, layout.n_betas)) for r in rows["candidate_relationship"]],
    )
    served = arm.policy.action_probabilities(obs)
    _, expected = reference_q_probabilities(history, rows)
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert np.all(served[candidate_mask(obs, layout)] > 0) and served[2, 2:].sum() == 0


# -- the real app --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(history, small_embedding_uri, tmp_path_factory):
    import httpx

    from rl.registry import ModelRegistry
    from services.app import start_app
    from tests.services.conftest import free_port, serve_on_local_ray

    work = tmp_path_factory.mktemp("served-longterm")
    config = app_config(
        work,
        small_embedding_uri,
        poll_interval_s=0.25,
        ab_arms=AB_ARMS,
        longterm_log_uri=history["log_uri"],
        longterm_variants=["personalised"],
        longterm_model=LONGTERM_MODEL,
        longterm_temperature=TEMPERATURE,
        longterm_engine="pyarrow",  # a small log; "ray" (Ray Data) adds ~15 s here
        blend_variant="personalised",
        blend_weight=WEIGHT,
    )
    with serve_on_local_ray():
        urls = start_app(config, http_port=free_port(), grpc_port=free_port())
        with httpx.Client(base_url=urls["http"], timeout=60) as client:
            yield {
                "client": client,
                "config": config,
                "registry": ModelRegistry(config["registry_uri"]),
                "work": str(work),
            }


@pytest.fixture(scope="module")
def answered(served, history):
    """One greedy recommendation for each of N_REQUESTS users from catalog tracks, its
    feedback, and the decision rows read back from the served log through Ray Data."""
    import ray

    client, tracks = served["client"], history["embedding"].track_ids
    responses = {}
    for i in range(N_REQUESTS):
        body = {"user_id": f"ab-user-{i}", "track_id": str(tracks[7 * i]), "mode": "greedy"}
        response = client.post("/v1/recommend", json=body)
        assert response.status_code == 200, response.text
        responses[response.json()["request_id"]] = response.json()
    for request_id, answer in responses.items():
        feedback = {
            "request_id": request_id,
            "track_id": answer["chosen_track_id"],
            "listen_fraction": 0.8,
            "skip_level": 3,
        }
        assert client.post("/v1/feedback", json=feedback).status_code == 200
    wait_until_written(client, len(responses), timeout_s=30)
    decisions = os.path.join(served["config"]["log_uri"], "decisions")
    rows = ray.data.read_parquet(decisions).to_pandas().set_index("request_id")
    return responses, rows


@pytest.mark.ray
def test_every_answer_carries_its_users_arm_and_the_policy_that_answered(answered):
    from services.core.scoring import ArmAssignment

    responses, _ = answered
    split = ArmAssignment(AB_ARMS)
    expected = {
        "production": ("logging", "myopic-listen"),
        "q-personalised": (Q_VERSION, "q-personalised"),
        "blend": (
            f"blend:logging+{Q_VERSION}@w={WEIGHT:g}",
            f"blend(myopic-listen,q-personalised,w={WEIGHT:g})",
        ),
    }
    for response in responses.values():
        assert response["arm"] == split(response["user_id"])
        assert (response["model_version"], response["policy"]) == expected[response["arm"]]
        scores = [c["score"] for c in response["candidates"]]
        assert sum(scores) == pytest.approx(1.0, abs=1e-6) and min(scores) > 0
        assert response["chosen_rank"] == 0  # greedy
        assert response["propensity"] == pytest.approx(scores[0], rel=1e-5)
    counts = {arm: 0 for arm in AB_ARMS}
    for response in responses.values():
        counts[response["arm"]] += 1
    assert min(counts.values()) >= 5, counts  # every arm answered several users


@pytest.mark.ray
def test_feedback_rows_carry_the_arm_and_version_in_the_log(answered):
    responses, rows = answered
    assert set(responses) <= set(rows.index)
    for request_id, response in responses.items():
        row = rows.loc[request_id]
        assert row["arm"] == response["arm"] and row["policy_version"] == response["model_version"]
        assert row["chosen_track_id"] == response["chosen_track_id"]
        assert np.exp(row["behaviour_logp"]) == pytest.approx(response["propensity"], rel=1e-4)
        assert row["source"] == "service"


@pytest.mark.ray
def test_q_arm_picks_the_q_scorers_argmax(answered, history):
    responses, rows = answered
    ids = [r for r, response in responses.items() if response["arm"] == "q-personalised"]
    logged = rows.loc[ids]
    scores, probabilities = reference_q_probabilities(history, logged)
    decisions = over_distinct_songs(history, logged, ids)
    for b, request_id, candidates in decisions:
        n = len(candidates)
        assert candidates[int(np.argmax(scores[b, :n]))] == responses[request_id]["chosen_track_id"]
        np.testing.assert_allclose(
            served_probabilities(responses[request_id], candidates), probabilities[b, :n], atol=1e-5
        )
    assert len(decisions) >= 5, f"only {len(decisions)} q-arm decisions over distinct songs"


@pytest.mark.ray
def test_blend_answers_are_the_geometric_blend_of_production_and_the_q_scorer(answered, history):
    from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy, latent_scale_of
    from services.core.user_state import build_observations

    responses, rows = answered
    embedding, layout = history["embedding"], history["layout"]
    ids = [r for r, response in responses.items() if response["arm"] == "blend"]
    logged = rows.loc[ids]
    row_of = {t: i for i, t in enumerate(embedding.track_ids)}
    obs = build_observations(
        layout,
        embedding.latents[[row_of[t] for t in logged["current_track_id"]]],
        np.stack(logged["user_taste"].to_numpy()),
        logged["hour"].to_numpy(),
        logged["weekday"].to_numpy(),
        [embedding.latents[[row_of[t] for t in c]] for c in logged["candidate_track_ids"]],
        [np.reshape(r, (-1, layout.n_betas)) for r in logged["candidate_relationship"]],
    )
    logging_policy = MyopicListenPolicy(
        ListenProbabilityModel(layout, latent_scale_of(embedding.latents))
    )
    production = logging_policy.action_probabilities(obs)
    _, longterm = reference_q_probabilities(history, logged)
    decisions = over_distinct_songs(history, logged, ids)
    for b, request_id, candidates in decisions:
        n = len(candidates)
        mixed = production[b, :n] ** (1 - WEIGHT) * longterm[b, :n] ** WEIGHT
        np.testing.assert_allclose(
            served_probabilities(responses[request_id], candidates), mixed / mixed.sum(), atol=1e-5
        )
        assert candidates[int(np.argmax(mixed))] == responses[request_id]["chosen_track_id"]
    assert len(decisions) >= 5, f"only {len(decisions)} blend decisions over distinct songs"


@pytest.mark.ray
def test_blend_follows_a_promoted_production_version(served, history):
    from services.core.scoring import ArmAssignment
    from tests.services.conftest import register_module_version

    split = ArmAssignment(AB_ARMS)
    users = {split(f"swap-user-{i}"): f"swap-user-{i}" for i in range(30)}
    registry = served["registry"]
    version = register_module_version(registry, history["layout"], served["work"], seed=5)
    registry.promote(version)
    track = str(history["embedding"].track_ids[1])

    def answer(arm: str) -> dict:
        body = {"user_id": users[arm], "track_id": track, "mode": "sample"}
        return served["client"].post("/v1/recommend", json=body).json()

    deadline = time.monotonic() + 60
    while answer("production")["model_version"] != version:
        assert time.monotonic() < deadline, f"{version} never served"
        time.sleep(0.25)
    blended = answer("blend")
    assert blended["model_version"] == f"blend:{version}+{Q_VERSION}@w={WEIGHT:g}"
    assert blended["policy"].startswith("blend(") and blended["value"] is None
    assert answer("q-personalised")["model_version"] == Q_VERSION  # untouched by the swap
    assert answer("production")["value"] is not None  # the critic answers for production
