"""`encore loop`: two rounds of serve -> log -> song table -> train -> gate -> promote on a
small simulated population, as a user runs it."""

from __future__ import annotations

import json

import pytest

from rl.cli import main


@pytest.mark.ray
@pytest.mark.slow
def test_two_round_loop_smoke(ray_local, simulated_project, tmp_path, capsys):
    out = tmp_path / "loop"
    code = main(
        ["loop", "--rounds", "2", "--users", "80", "--days", "4", "--heldout-days", "1",
         "--iterations", "1", "--epsilon", "0.1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "round 1: served logging" in printed and "round 2: served" in printed
    state = json.loads((out / "loop.json").read_text())
    rounds = state["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["decisions"] > 0 and r["reward_per_decision"] == r["reward_per_decision"]
        assert r["gate"]["decisions"] > 0 and len(r["gate"]["difference_ci"]) == 2
    # The OPE estimate made after round 1 is printed beside round 2's realised value.
    assert rounds[0]["ope_estimate"] is None and rounds[1]["ope_estimate"] is not None
    manifests = sorted((out / "registry" / "versions").glob("*/manifest.json"))
    assert len(manifests) == 2
    for manifest in manifests:
        data = json.loads(manifest.read_text())["data"]
        assert "promotion_gate" in data and "song_table_checksums" in data
    if rounds[0]["promoted"]:  # round 2 was fine-tuned from the promoted version
        second = json.loads(manifests[1].read_text())
        assert second["parent"] == rounds[0]["candidate"]
