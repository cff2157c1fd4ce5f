"""The serving stage of ``encore demo``: the real app answering real requests, end to end.

Where it sits: called by rl/cli/demo.py after the embedding stage. Starts the served app
(services/app.py) on the embedded default (local Ray, local parquet, the registry's
production version or the logging policy), sends recommendations for real catalog tracks
over HTTP and one over gRPC, sends feedback for each, prints the recommendations and where
the feedback landed (the decision log, read back), and shuts everything down.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

#: Real tracks from different genres (same as the demo's neighbours stage).
DEMO_TRACKS = (
    "0sf12qNH5qcw8qpgymFOqD",  # pop: Blinding Lights, The Weeknd
    "4u7EnebtmKWzUH433cf5Qv",  # rock: Bohemian Rhapsody, Queen
    "0nbXyq5TXYPCO7pr3N8S4I",  # rap: The Box, Roddy Ricch
)


def run_serving_demo(
    data_root: str,
    catalog_uri: str | None = None,
    tracks: Sequence[str] = DEMO_TRACKS,
    k: int = 4,
    http_port: int = 8000,
    grpc_port: int = 9000,
    seed: int = 0,
) -> dict[str, Any]:
    """Serve, recommend, give feedback, show the logged rows; returns a summary dict."""
    import httpx
    import ray
    from ray import serve

    from services.app import start_app, use_serve_fast_path
    from services.config import ServiceConfig
    from services.grpc_client import EncoreClient

    started = time.perf_counter()
    args: dict[str, Any] = {"data_root": data_root, "k": k, "flush_interval_s": 1.0, "seed": seed}
    if catalog_uri:
        args["catalog_uri"] = catalog_uri
    config = ServiceConfig.from_args(args)
    owns_ray = not ray.is_initialized()
    if owns_ray:
        use_serve_fast_path()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rng = random.Random(seed)
    summary: dict[str, Any] = {"recommendations": [], "feedback": []}
    try:
        urls = start_app(config, http_port=http_port, grpc_port=grpc_port)
        print(
            f"served app up in {time.perf_counter() - started:.0f} s: {urls['http']} (docs {urls['docs']}), gRPC {urls['grpc']}"
        )
        if "http_direct" in urls:
            print(
                f"direct ingress (no proxy hop): HTTP {urls['http_direct']}, gRPC {urls.get('grpc_direct')}"
            )
        with httpx.Client(base_url=urls.get("http_direct", urls["http"]), timeout=30) as client:
            models = client.get("/v1/models").json()
            print(
                f"serving: {sorted({s['version'] for s in models['serving'].values()})}; production pointer: {models['production_pointer']}"
            )
            for track in tracks:
                answered = _recommend_and_give_feedback(client, track, k, rng)
                if answered is not None:
                    summary["recommendations"].append(answered[0])
                    summary["feedback"].append(answered[1])
            bad = client.post(
                "/v1/recommend", json={"user_id": "demo-user", "track_id": "not-a-track"}
            )
            print(f"\nunknown track -> {bad.status_code} {bad.json()['detail']}")
        if summary["recommendations"]:
            with EncoreClient(urls.get("grpc_direct", urls["grpc"])) as grpc_client:
                reply = grpc_client.recommend(
                    "demo-grpc-user",
                    track_id=summary["recommendations"][0]["candidates"][0]["track_id"],
                    k=k,
                )
                print(
                    f"gRPC Recommend -> {len(reply.candidates)} candidates, pick {reply.chosen_track_id} ({reply.model_version})"
                )
    finally:
        serve.shutdown()  # the ingress flushes its feedback journal to parquet on the way out
        if owns_ray:
            ray.shutdown()
    landed_rows = _print_landed_feedback(config.log_uri, summary["feedback"])
    summary.update(
        log_uri=config.log_uri, rows_landed=landed_rows, seconds=time.perf_counter() - started
    )
    return summary


def _recommend_and_give_feedback(
    client: Any, track: str, k: int, rng: random.Random
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """One recommendation after ``track``, printed, and a plausible feedback for its pick;
    None when the track is not in the served catalog."""
    import numpy as np

    answer = client.post("/v1/recommend", json={"user_id": "demo-user", "track_id": track, "k": k})
    if answer.status_code == 404:
        print(f"  {track}: not in this embedding's catalog, skipped")
        return None
    answer.raise_for_status()
    body = answer.json()
    print(
        f"\nafter {track} -> request {body['request_id'][:8]} ({body['policy']} @ {body['model_version']}):"
    )
    for rank, candidate in enumerate(body["candidates"]):
        mark = "*" if candidate["track_id"] == body["chosen_track_id"] else " "
        print(
            f"  {mark} {rank}. p={candidate['score']:.3f}  {candidate['track_name']} — {candidate['track_artist']}"
        )
    print(f"    picked with propensity {body['propensity']:.3f}, value {body['value']}")
    listen_fraction = round(rng.uniform(0.1, 1.0), 2)
    # A consistent response: the less was heard, the earlier the skip.
    skip_level = int(np.searchsorted([0.1, 0.4, 0.8], listen_fraction))
    ack = client.post(
        "/v1/feedback",
        json={"request_id": body["request_id"], "track_id": body["chosen_track_id"],
              "listen_fraction": listen_fraction, "liked": listen_fraction > 0.9, "skip_level": skip_level},
    )  # fmt: skip
    ack.raise_for_status()
    print(
        f"    feedback: listen {listen_fraction:.0%}, skip level {skip_level} -> reward {ack.json()['reward']:+.2f}, journaled"
    )
    return body, ack.json()


def _print_landed_feedback(log_uri: str, feedback: list[dict[str, Any]]) -> int:
    """Read the decision log back and print how many acknowledged feedbacks landed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from rl.feedback.log import read_decisions_table

    wanted = {f["request_id"] for f in feedback}
    table = read_decisions_table(log_uri)
    landed = table.filter(
        pc.is_in(table["request_id"], value_set=pa.array(sorted(wanted), pa.string()))
    )
    days = sorted(set(landed["day"].to_pylist()))
    print(
        f"\nfeedback landed: {landed.num_rows}/{len(wanted)} rows in {log_uri}/decisions/"
        + ", ".join(f"day={d}" for d in days)
        + f" ({table.num_rows} served decisions logged in total)"
    )
    return landed.num_rows
