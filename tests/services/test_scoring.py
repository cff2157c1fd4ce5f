"""The Scorer's core: policy slot swaps and refusals, A/B split, picks and propensities."""

import json

import numpy as np
import pytest

from rl.observation import ObservationLayout
from rl.policy import ListenProbabilityModel, MyopicListenPolicy, UniformRandomPolicy
from services.scoring import ArmAssignment, PolicySlot, ScoringCore, ServingPolicy, check_policy

LAYOUT = ObservationLayout(k=4)


def logging_policy() -> ServingPolicy:
    return ServingPolicy(MyopicListenPolicy(ListenProbabilityModel(LAYOUT)), "logging")


def observations(batch: int, rng: np.random.Generator) -> np.ndarray:
    obs = rng.normal(size=(batch, LAYOUT.size)).astype(np.float32)
    obs[:, LAYOUT.size - LAYOUT.k :] = 1.0
    obs[0, LAYOUT.size - 1] = 0.0  # one padded candidate
    return obs


class BrokenPolicy:
    name = "broken"

    def action_probabilities(self, obs):
        return np.full((len(obs), LAYOUT.k), np.nan)


def write_pointer(registry, version):
    registry.mkdir(exist_ok=True)
    (registry / "PRODUCTION.json").write_text(json.dumps({"version": version, "promoted_at": 1.0}))


def test_slot_serves_the_fallback_until_production_exists_then_swaps(tmp_path):
    loads = []

    def loader(uri, version, layout):
        loads.append(version)
        return ServingPolicy(UniformRandomPolicy(layout), version)

    slot = PolicySlot(LAYOUT, logging_policy(), str(tmp_path), loader=loader)
    assert slot.sync() is None and slot.active.version == "logging"
    write_pointer(tmp_path, "v0001")
    slot.sync()
    assert slot.active.version == "v0001"
    slot.sync()
    assert loads == ["v0001"]  # no reload of the version already serving


def test_slot_refuses_a_bad_version_once_and_keeps_serving(tmp_path):
    def loader(uri, version, layout):
        policy = ServingPolicy(BrokenPolicy(), version)
        check_policy(policy.policy, layout)
        return policy

    slot = PolicySlot(LAYOUT, logging_policy(), str(tmp_path), loader=loader)
    write_pointer(tmp_path, "v0002")
    reason = slot.sync()
    assert "finite" in reason and slot.active.version == "logging"
    assert slot.sync() is None  # refused once, not retried every poll
    assert [r["version"] for r in slot.refusals] == ["v0002"] and slot.refusals[0][
        "kept"
    ] == "logging"


def test_check_policy_refuses_a_layout_mismatch():
    with pytest.raises(ValueError, match="layout"):
        check_policy(UniformRandomPolicy(ObservationLayout(k=3)), LAYOUT)
    check_policy(logging_policy().policy, LAYOUT)


def test_arm_assignment_is_deterministic_and_follows_the_weights():
    split = ArmAssignment({"production": 3.0, "logging": 1.0})
    users = [f"user-{i}" for i in range(4000)]
    arms = [split(u) for u in users]
    assert arms == [split(u) for u in users]
    assert np.mean(np.asarray(arms) == "logging") == pytest.approx(0.25, abs=0.03)
    assert ArmAssignment()("anyone") == ""
    with pytest.raises(ValueError, match="finite and >= 0"):
        ArmAssignment({"production": -1})


def test_scoring_core_propensities_are_the_probabilities_of_the_picks(rng):
    core = ScoringCore(PolicySlot(LAYOUT, logging_policy()), seed=0)
    obs = observations(64, rng)
    modes = ["greedy"] * 32 + ["sample"] * 32
    scored = core.score(obs, modes, [""] * 32 + ["logging"] * 32)
    rows = np.arange(64)
    np.testing.assert_allclose(
        np.exp(scored.logp), scored.probabilities[rows, scored.chosen], rtol=1e-6
    )
    np.testing.assert_array_equal(scored.chosen[:32], scored.probabilities[:32].argmax(axis=1))
    assert scored.probabilities[0, -1] == 0 and scored.chosen[0] != LAYOUT.k - 1
    assert set(scored.versions) == {"logging"} and scored.values == [None] * 64
    with pytest.raises(KeyError, match="unknown arm"):
        core.score(obs[:1], ["greedy"], ["nope"])


def test_sampled_picks_follow_the_policy(rng):
    core = ScoringCore(PolicySlot(LAYOUT, logging_policy()), seed=1)
    obs = np.repeat(observations(2, rng)[1:], 4000, axis=0)
    scored = core.score(obs, ["sample"] * len(obs), [""] * len(obs))
    frequencies = np.bincount(scored.chosen, minlength=LAYOUT.k) / len(obs)
    np.testing.assert_allclose(frequencies, scored.probabilities[0], atol=0.03)
