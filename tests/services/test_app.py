"""The served app for real: ``serve.run`` of services.app, HTTP and gRPC requests,
every bad-input answer, feedback read back through Ray Data, hot-swap under load, refusals.

Ray runs with Serve's direct ingress (services.app.SERVE_FAST_PATH_ENV), as ``encore serve``
does: most tests talk to the Ingress replica's own ports (the fast path); one checks that
the proxies answer the same requests.

Serve starts once for the module (about 30 s on 2 cores); the tests run in file order and
share it (the hot-swap tests come last because they change the production version).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from tests.services.conftest import app_config, wait_until_written

pytestmark = pytest.mark.ray

ADMIN_TOKEN = "test-admin-token"
TRACK = "0sf12qNH5qcw8qpgymFOqD"  # replaced by a track of the small embedding below
FEATURES = {
    "danceability": 0.6, "energy": 0.7, "key": 5, "loudness": -6.0, "mode": 1,
    "speechiness": 0.05, "acousticness": 0.1, "instrumentalness": 0.0, "liveness": 0.1,
    "valence": 0.5, "tempo": 120.0,
}  # fmt: skip


@pytest.fixture(scope="module")
def served(small_embedding_uri, tmp_path_factory):
    import httpx

    from rl.decision.observation import ObservationLayout
    from rl.registry import ModelRegistry
    from rl.songs.embedding import load_song_embedding
    from services.app import start_app
    from tests.services.conftest import free_port, register_module_version, serve_on_local_ray

    os.environ["ENCORE_ADMIN_TOKEN"] = ADMIN_TOKEN  # inherited by the replicas
    work = tmp_path_factory.mktemp("served")
    registry = ModelRegistry(str(work / "registry"))
    layout = ObservationLayout()
    versions = {
        "good_a": register_module_version(registry, layout, str(work), seed=1),
        "good_b": register_module_version(registry, layout, str(work), seed=2),
        "incompatible": register_module_version(
            registry, ObservationLayout(k=3), str(work), seed=3
        ),
        "corrupt": register_module_version(registry, layout, str(work), seed=4),
    }
    module_state = os.path.join(registry.module_uri(versions["corrupt"]), "module_state.pkl")
    with open(module_state, "r+b") as handle:
        handle.truncate(10)
    config = app_config(work, small_embedding_uri, registry.uri, poll_interval_s=0.25)
    with serve_on_local_ray(fast_path=True):
        urls = start_app(config, http_port=free_port(), grpc_port=free_port())
        assert "http_direct" in urls and "grpc_direct" in urls, urls
        track_ids = list(load_song_embedding(small_embedding_uri).track_ids)
        with httpx.Client(base_url=urls["http_direct"], timeout=30) as client:
            yield {
                "client": client, "urls": urls, "registry": registry, "versions": versions,
                "config": config, "tracks": track_ids,
            }  # fmt: skip


def recommend(served, **body):
    payload = {"user_id": "alice", "track_id": served["tracks"][0], **body}
    return served["client"].post("/v1/recommend", json=payload)


# -- the happy path -------------------------------------------------------------------------
def test_recommend_ranks_candidates_with_the_logging_policy(served):
    response = recommend(served, k=4, mode="sample")
    assert response.status_code == 200, response.text
    body = response.json()
    scores = [c["score"] for c in body["candidates"]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-6)
    assert served["tracks"][0] not in {c["track_id"] for c in body["candidates"]}
    chosen = body["candidates"][body["chosen_rank"]]
    assert chosen["track_id"] == body["chosen_track_id"]
    assert body["propensity"] == pytest.approx(chosen["score"], rel=1e-5)
    assert body["model_version"] == "logging" and body["value"] is None
    assert len(body["request_id"]) == 32


def test_recommend_from_raw_features_and_exclusions(served):
    first = recommend(served, mode="greedy").json()
    excluded = [c["track_id"] for c in first["candidates"][:2]]
    second = recommend(served, exclude=excluded, mode="greedy").json()
    assert not set(excluded) & {c["track_id"] for c in second["candidates"]}
    assert first["chosen_rank"] == 0  # greedy takes the most probable candidate
    body = served["client"].post(
        "/v1/recommend", json={"user_id": "bob", "features": FEATURES, "k": 2}
    )
    assert body.status_code == 200, body.text
    assert len(body.json()["candidates"]) == 2


def test_openapi_docs_are_served(served):
    schema = served["client"].get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/feedback", "/v1/health", "/v1/models"} <= set(schema["paths"])
    assert served["client"].get("/docs").status_code == 200
    health = served["client"].get("/v1/health").json()
    assert health["status"] == "ok"


# -- bad input: a clear answer, never a 500 ---------------------------------------------------
BAD_RECOMMEND = [
    ({"track_id": "no-such-track"}, 404, "no-such-track"),
    ({"k": 0}, 422, "k"),
    ({"k": 5}, 422, "k"),  # above the served policy's k = 4
    ({"k": 51}, 422, "k"),  # above the schema's limit
    ({"exclude": [f"t{i}" for i in range(501)]}, 422, "exclude"),
    ({"mode": "best"}, 422, "mode"),
    ({"user_id": ""}, 422, "user_id"),
    ({"features": FEATURES}, 422, "body"),  # both a track and features
    ({"surprise": 1}, 422, "surprise"),
    ({"track_id": None, "features": {**FEATURES, "tempo": 1000.0}}, 422, "features.tempo"),
    ({"track_id": None, "features": {**FEATURES, "energy": -0.1}}, 422, "features.energy"),
    (
        {"track_id": None, "features": {k: v for k, v in FEATURES.items() if k != "key"}},
        422,
        "features.key",
    ),
]


@pytest.mark.parametrize(("override", "status", "named"), BAD_RECOMMEND)
def test_bad_recommend_requests(served, override, status, named):
    payload = {"user_id": "alice", "track_id": served["tracks"][0], **override}
    payload = {k: v for k, v in payload.items() if v is not None}
    response = served["client"].post("/v1/recommend", json=payload)
    assert response.status_code == status, response.text
    body = response.json()
    assert (
        named in (body.get("field"), *[e["field"] for e in body.get("errors", [])])
        or named in body["detail"]
    )


def test_nan_feature_and_malformed_json_are_422(served):
    client = served["client"]
    nan_body = b'{"user_id": "u", "features": {"danceability": NaN, "energy": 0.5, "key": 1, "loudness": -5, "mode": 1, "speechiness": 0.1, "acousticness": 0.1, "instrumentalness": 0, "liveness": 0.1, "valence": 0.5, "tempo": 120}}'
    response = client.post(
        "/v1/recommend", content=nan_body, headers={"content-type": "application/json"}
    )
    assert (
        response.status_code == 422
        and response.json()["errors"][0]["field"] == "features.danceability"
    )
    response = client.post(
        "/v1/recommend", content=b'{"user_id": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_oversized_body_is_413(served):
    response = served["client"].post(
        "/v1/recommend", content=b"x" * 100_000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_bad_feedback(served):
    client = served["client"]
    good = {"request_id": "f" * 32, "track_id": "t", "listen_fraction": 0.5, "skip_level": 3}
    response = client.post("/v1/feedback", json=good)
    assert response.status_code == 404 and "f" * 32 in response.json()["detail"]
    decision = recommend(served).json()
    for override, field in [
        ({"listen_fraction": 1.5}, "listen_fraction"),
        ({"skip_level": 4}, "skip_level"),
    ]:
        body = {
            **good,
            "request_id": decision["request_id"],
            "track_id": decision["chosen_track_id"],
            **override,
        }
        response = client.post("/v1/feedback", json=body)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == field
    not_the_pick = next(
        c["track_id"]
        for c in decision["candidates"]
        if c["track_id"] != decision["chosen_track_id"]
    )
    response = client.post(
        "/v1/feedback",
        json={**good, "request_id": decision["request_id"], "track_id": not_the_pick},
    )
    assert response.status_code == 409 and response.json()["field"] == "track_id"


# -- feedback lands in the decision log training reads --------------------------------------------
def test_feedback_is_written_to_parquet_and_read_by_ray_data(served):
    from rl.feedback.log import read_decisions

    client = served["client"]
    sent = {}
    for i in range(6):
        decision = recommend(served, user_id=f"listener-{i % 2}").json()
        response = client.post(
            "/v1/feedback",
            json={"request_id": decision["request_id"], "track_id": decision["chosen_track_id"],
                  "listen_fraction": 0.9, "liked": i % 3 == 0, "skip_level": 3},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json()["accepted"]
        sent[decision["request_id"]] = decision
    # A second feedback for the same request is refused: the decision was consumed.
    again = client.post(
        "/v1/feedback",
        json={
            "request_id": next(iter(sent)),
            "track_id": "x",
            "listen_fraction": 1,
            "skip_level": 3,
        },
    )
    assert again.status_code == 404
    # Acknowledged rows reach parquet on the flush timer (0.5 s here): wait for the sink.
    wait_until_written(client, len(sent), timeout_s=20)
    rows = read_decisions(served["config"]["log_uri"]).to_pandas()
    rows = rows.set_index("request_id").loc[list(sent)]
    assert (rows["source"] == "service").all()
    for request_id, decision in sent.items():
        row = rows.loc[request_id]
        assert row["chosen_track_id"] == decision["chosen_track_id"]
        assert np.exp(row["behaviour_logp"]) == pytest.approx(decision["propensity"], rel=1e-4)
        assert row["policy_version"] == decision["model_version"]
        assert len(row["candidate_relationship"]) == 4 * len(row["candidate_track_ids"])
    # listener-0's taste moved with each listen: its logged taste differs between decisions.
    tastes = rows.loc[[r for r, d in sent.items() if d["user_id"] == "listener-0"], "user_taste"]
    assert len({tuple(np.round(np.asarray(t, float), 6)) for t in tastes}) == len(tastes)


def test_a_listeners_state_is_shown_and_an_unknown_one_is_404(served):
    client = served["client"]
    decision = recommend(served, user_id="inspected", session_id="inspect-1").json()
    ack = client.post(
        "/v1/feedback",
        json={"request_id": decision["request_id"], "track_id": decision["chosen_track_id"],
              "listen_fraction": 1.0, "liked": True, "skip_level": 3},
    )  # fmt: skip
    assert ack.status_code == 200 and ack.json()["listened"]
    later = recommend(served, user_id="inspected", session_id="inspect-1").json()
    view = client.get("/v1/users/inspected")
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["listens"] == 1 and len(body["taste"]) == 5  # the VAE's latent size
    assert [r["request_id"] for r in body["recent_decisions"]] == [
        later["request_id"],
        decision["request_id"],
    ]  # newest first
    assert body["recent_decisions"][1]["chosen_track_id"] == decision["chosen_track_id"]
    (related,) = body["relationships"]
    assert related["track_id"] == decision["chosen_track_id"]
    assert len(related["state"]) == len(body["betas"]) == 4
    assert body["sessions"] == {"inspect-1": 2}
    missing = client.get("/v1/users/nobody-ever")
    assert missing.status_code == 404 and missing.json()["field"] == "user_id"


# -- gRPC ---------------------------------------------------------------------------------------
def test_grpc_recommend_feedback_and_errors(served):
    import grpc

    from services.grpc_client import EncoreClient

    with EncoreClient(served["urls"]["grpc_direct"]) as client:
        response = client.recommend("grpc-user", track_id=served["tracks"][1], k=3, mode="greedy")
        assert len(response.candidates) == 3 and response.model_version
        ack = client.feedback(
            response.request_id, response.chosen_track_id, listen_fraction=1.0, skip_level=3
        )
        assert ack.accepted
        with pytest.raises(grpc.RpcError) as missing:
            client.recommend("grpc-user", track_id="no-such-track")
        assert (
            missing.value.code() == grpc.StatusCode.NOT_FOUND
            and "no-such-track" in missing.value.details()
        )
        with pytest.raises(grpc.RpcError) as invalid:
            client.recommend("grpc-user", track_id=served["tracks"][1], k=0)
        assert (
            invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            and "k" in invalid.value.details()
        )
        with pytest.raises(grpc.RpcError) as unknown:
            client.feedback("f" * 32, "t", listen_fraction=0.5, skip_level=1)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_proxies_answer_like_the_direct_ingress(served):
    import httpx

    from services.grpc_client import EncoreClient

    body = {"user_id": "proxied", "track_id": served["tracks"][2], "mode": "greedy"}
    direct = served["client"].post("/v1/recommend", json=body).json()
    proxied = httpx.post(f"{served['urls']['http']}/v1/recommend", json=body, timeout=30)
    assert proxied.status_code == 200, proxied.text
    assert [c["track_id"] for c in proxied.json()["candidates"]] == [
        c["track_id"] for c in direct["candidates"]
    ]
    missing = httpx.post(
        f"{served['urls']['http']}/v1/recommend",
        json={"user_id": "proxied", "track_id": "no-such-track"},
        timeout=30,
    )
    assert missing.status_code == 404 and "no-such-track" in missing.json()["detail"]
    with EncoreClient(served["urls"]["grpc"]) as client:
        reply = client.recommend("proxied", track_id=served["tracks"][2], mode="greedy")
    assert [c.track_id for c in reply.candidates] == [c["track_id"] for c in direct["candidates"]]


# -- admin, hot-swap, refusals ----------------------------------------------------------------------
@pytest.mark.parametrize("port", ["http_direct", "http"])
def test_schemathesis_finds_nothing_against_the_openapi_contract(served, port, tmp_path):
    """Schemathesis (every check; examples, coverage and fuzzing phases) against the real
    app's own /openapi.json, on the Ingress replica's port and through the proxy."""
    import subprocess
    import sys
    from pathlib import Path

    binary = Path(sys.executable).parent / "schemathesis"
    command = [
        str(binary), "run", f"{served['urls'][port]}/openapi.json", "--checks", "all",
        "--phases", "examples,coverage,fuzzing", "--max-examples", "15", "--workers", "1",
        "--request-timeout", "30", "--seed", "1", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    # cwd: schemathesis keeps its example database under .schemathesis/ there.
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_promote_needs_the_admin_token(served):
    client = served["client"]
    version = served["versions"]["good_a"]
    assert client.post("/v1/admin/promote", json={"version": version}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (
        client.post("/v1/admin/promote", json={"version": version}, headers=wrong).status_code
        == 401
    )


class SteadyLoad:
    """Background threads sending /v1/recommend as fast as answers come back."""

    def __init__(self, base_url: str, track: str, threads: int = 4) -> None:
        import httpx

        self.clients = [httpx.Client(base_url=base_url, timeout=30) for _ in range(threads)]
        self.track = track
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(c,), daemon=True) for c in self.clients
        ]

    def _run(self, client) -> None:
        while not self.stop.is_set():
            try:
                response = client.post(
                    "/v1/recommend", json={"user_id": "load", "track_id": self.track}
                )
                with self.lock:
                    if response.status_code == 200:
                        self.answers.append((time.monotonic(), response.json()["model_version"]))
                    else:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
            except Exception as exc:  # a dropped connection is a failure too
                with self.lock:
                    self.failures.append(repr(exc))

    def __enter__(self) -> SteadyLoad:
        for thread in self.threads:
            thread.start()
        time.sleep(1.0)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        for client in self.clients:
            client.close()

    def max_gap_s(self) -> float:
        times = sorted(t for t, _ in self.answers)
        return float(max(np.diff(times))) if len(times) > 1 else float("inf")

    def describe_gap(self) -> str:
        answers = sorted(self.answers)
        times = np.asarray([t for t, _ in answers])
        worst = int(np.argmax(np.diff(times)))
        return (
            f"{len(answers)} answers over {times[-1] - times[0]:.1f} s; worst gap "
            f"{times[worst + 1] - times[worst]:.3f} s at +{times[worst] - times[0]:.1f} s between "
            f"{answers[worst][1]} and {answers[worst + 1][1]}"
        )

    def versions(self) -> list[str]:
        return [v for _, v in sorted(self.answers)]


def wait_until_serving(served, version: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if recommend(served).json()["model_version"] == version:
            return
        time.sleep(0.2)
    raise AssertionError(f"{version} never served")


def test_hot_swap_under_load_has_no_failures_and_no_gap(served):
    good_a, good_b = served["versions"]["good_a"], served["versions"]["good_b"]
    with SteadyLoad(served["urls"]["http_direct"], served["tracks"][0]) as load:
        # Over HTTP with the admin token: the answer comes once the Scorer serves it.
        promoted = served["client"].post(
            "/v1/admin/promote",
            json={"version": good_a},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["serving"] == good_a
        time.sleep(1.0)
        # As `encore promote` does: move the registry pointer; replicas follow it.
        served["registry"].promote(good_b)
        wait_until_serving(served, good_b)
        time.sleep(1.0)
    assert not load.failures, load.failures[:5]
    versions = load.versions()
    assert versions[0] == "logging" and versions[-1] == good_b and good_a in versions
    # Each swap happens once: versions never go back.
    order = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert order == ["logging", good_a, good_b]
    assert load.max_gap_s() < 1.0, load.describe_gap()
    print(load.describe_gap())
    body = recommend(served).json()
    assert body["value"] is not None and np.isfinite(body["value"])  # the critic answers


def test_corrupt_and_incompatible_versions_are_refused(served):
    from rl import storage
    from rl.registry import PRODUCTION_POINTER, RegistryError

    registry, versions, client = served["registry"], served["versions"], served["client"]
    serving = served["versions"]["good_b"]
    # The command refuses a corrupt version (checksums) and so does the admin endpoint.
    with pytest.raises(RegistryError, match="corrupt"):
        registry.promote(versions["corrupt"])
    refused = client.post(
        "/v1/admin/promote",
        json={"version": versions["corrupt"]},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert refused.status_code == 409 and "corrupt" in refused.json()["detail"]
    # An incompatible version passes the checksums; the Scorer refuses to load it.
    registry.promote(versions["incompatible"])
    # A pointer tampered to a corrupt version (no promote): refused as well.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        refusals = client.get("/v1/models").json()["refusals"]
        if any(r["version"] == versions["incompatible"] for r in refusals):
            break
        time.sleep(0.3)
    storage.write_json(
        storage.join(registry.uri, PRODUCTION_POINTER),
        {"version": versions["corrupt"], "promoted_at": time.time(), "previous": serving},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        models = client.get("/v1/models").json()
        if any(r["version"] == versions["corrupt"] for r in models["refusals"]):
            break
        time.sleep(0.3)
    reasons = {r["version"]: r["reason"] for r in models["refusals"]}
    assert "layout" in reasons[versions["incompatible"]]
    assert "corrupt" in reasons[versions["corrupt"]]
    assert all(entry["version"] == serving for entry in models["serving"].values())
    assert recommend(served).json()["model_version"] == serving
