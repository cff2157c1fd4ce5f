"""The Scorer's core: policy slot swaps and refusals, A/B split, picks and propensities."""

import json

import numpy as np
import pytest

from rl.decision.observation import ObservationLayout
from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy, UniformRandomPolicy
from services.core.scoring import (
    ArmAssignment,
    BlendArm,
    PolicySlot,
    ScoringCore,
    ServingPolicy,
    blend_probabilities,
    check_policy,
)

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


def test_explore_mode_is_epsilon_greedy_with_exact_logged_propensities(rng):
    """The served default: greedy with probability 1 - epsilon, else uniform over the valid
    candidates; the logged propensity is that distribution's, not the policy's."""
    epsilon = 0.2
    core = ScoringCore(PolicySlot(LAYOUT, logging_policy()), seed=2, epsilon=epsilon)
    obs = np.repeat(observations(2, rng), 6000, axis=0)  # row 0's kind has a padded slot
    scored = core.score(obs, ["explore"] * len(obs), [""] * len(obs))
    for kind, rows in ((0, slice(0, 6000)), (1, slice(6000, None))):
        policy = scored.probabilities[rows][0]
        valid = policy > 0
        # Naive reference: build the epsilon-greedy distribution by hand.
        expected = np.where(valid, epsilon / valid.sum(), 0.0)
        expected[int(np.argmax(policy))] += 1.0 - epsilon
        assert expected.sum() == pytest.approx(1.0)
        chosen = scored.chosen[rows]
        np.testing.assert_allclose(np.exp(scored.logp[rows]), expected[chosen], rtol=1e-6)
        frequencies = np.bincount(chosen, minlength=LAYOUT.k) / len(chosen)
        np.testing.assert_allclose(frequencies, expected, atol=0.02)
        if kind == 0:
            assert not (chosen == LAYOUT.k - 1).any()  # never the padded candidate
    with pytest.raises(ValueError, match="epsilon"):
        ScoringCore(PolicySlot(LAYOUT, logging_policy()), epsilon=1.5)


# -- the blend arm ------------------------------------------------------------------------
class FixedPolicy:
    """Returns the probabilities it holds for the observation's row id, stored in the
    observation's first entry (a test double of a DecisionPolicy's output, not of Ray)."""

    def __init__(self, probabilities: np.ndarray, name: str) -> None:
        self.probabilities = probabilities
        self.name = name

    def action_probabilities(self, obs):
        return self.probabilities[np.asarray(obs)[:, 0].astype(np.int64)]


def naive_blend(production, longterm, mask, weight):
    """p_i = pi_i^(1-w) q_i^w / sum_j pi_j^(1-w) q_j^w over valid candidates, one by one."""
    out = np.zeros_like(production)
    for row in range(len(production)):
        terms = [
            max(production[row, i], 1e-12) ** (1 - weight) * max(longterm[row, i], 1e-12) ** weight
            if mask[row, i]
            else 0.0
            for i in range(production.shape[1])
        ]
        out[row] = np.asarray(terms) / sum(terms)
    return out


def random_policies(rng, batch=50, k=4):
    mask = rng.random((batch, k)) > 0.2
    mask[:, 0] = True
    production = np.where(mask, rng.dirichlet(np.ones(k) * 0.3, size=batch), 0.0)
    production /= production.sum(axis=1, keepdims=True)
    longterm = np.where(mask, rng.dirichlet(np.ones(k), size=batch), 0.0)
    longterm /= longterm.sum(axis=1, keepdims=True)
    return production, longterm, mask


@pytest.mark.parametrize("weight", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_blend_probabilities_match_the_naive_geometric_mixture(rng, weight):
    production, longterm, mask = random_policies(rng)
    production[3] = 0.0  # a policy sure of one candidate
    production[3, 0] = 1.0
    blended = blend_probabilities(production, longterm, mask, weight)
    np.testing.assert_allclose(blended, naive_blend(production, longterm, mask, weight), atol=1e-12)
    assert np.all(np.isfinite(blended)) and np.allclose(blended.sum(axis=1), 1.0)
    assert np.all(blended[~mask] == 0) and np.all(blended[mask] > 0)
    if weight == 0.0:
        np.testing.assert_allclose(blended, production, atol=1e-10)
    if weight == 1.0:
        np.testing.assert_allclose(blended, longterm, atol=1e-12)


def test_blend_ranks_by_the_weighted_log_scores(rng):
    production, longterm, mask = random_policies(rng, batch=200)
    blended = blend_probabilities(production, longterm, mask, 0.3)
    with np.errstate(divide="ignore"):  # log 0 on padded slots, masked out
        score = np.where(mask, 0.7 * np.log(production) + 0.3 * np.log(longterm), -np.inf)
    np.testing.assert_array_equal(blended.argmax(axis=1), score.argmax(axis=1))


def test_blend_weight_is_validated():
    production, longterm, mask = random_policies(np.random.default_rng(0), batch=2)
    for weight in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="blend weight must be in"):
            blend_probabilities(production, longterm, mask, weight)
        with pytest.raises(ValueError, match="blend weight must be in"):
            BlendArm(logging_policy(), weight)


def test_blend_arm_follows_production_hot_swaps(tmp_path, rng):
    """The blend reads the slot's active policy on every batch: after a swap it blends
    the new version, reports it, and its propensities stay those of its probabilities."""
    obs = observations(40, rng)
    obs[:, 0] = np.arange(40)  # the row id FixedPolicy answers by
    mask = obs[:, LAYOUT.size - LAYOUT.k :] > 0.5
    _, longterm_p, _ = random_policies(rng, batch=40)
    longterm_p = np.where(mask, longterm_p + 0.01, 0.0)
    longterm_p /= longterm_p.sum(axis=1, keepdims=True)
    longterm = ServingPolicy(FixedPolicy(longterm_p, "q-test"), "longterm:test")
    versions = {}

    def loader(uri, version, layout):
        probabilities = rng.dirichlet(np.ones(LAYOUT.k), size=40)
        probabilities = np.where(mask, probabilities, 0.0)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        versions[version] = probabilities
        return ServingPolicy(FixedPolicy(probabilities, f"ppo:{version}"), version)

    slot = PolicySlot(LAYOUT, logging_policy(), str(tmp_path), loader=loader)
    core = ScoringCore(slot, seed=0, blend_arms={"blend": BlendArm(longterm, 0.4)})
    assert core.arms == ["blend", "logging", "production"]
    check_policy(core.policy_for("blend").policy, LAYOUT)
    before = core.score(obs, ["greedy"] * 40, ["blend"] * 40)
    expected = naive_blend(
        logging_policy().policy.action_probabilities(obs).astype(np.float64), longterm_p, mask, 0.4
    )
    np.testing.assert_allclose(before.probabilities, expected, atol=1e-6)
    assert set(before.versions) == {"blend:logging+longterm:test@w=0.4"}
    assert before.values == [None] * 40  # the critic values production, not the blend
    for version in ("v0001", "v0002"):
        write_pointer(tmp_path, version)
        slot.sync()
        modes = ["sample"] * 20 + ["greedy"] * 20
        arms = ["blend"] * 30 + ["production"] * 10
        scored = core.score(obs, modes, arms)
        np.testing.assert_allclose(
            scored.probabilities[:30],
            naive_blend(versions[version], longterm_p, mask, 0.4)[:30],
            atol=1e-10,
        )
        np.testing.assert_allclose(scored.probabilities[30:], versions[version][30:])
        assert set(scored.versions[:30]) == {f"blend:{version}+longterm:test@w=0.4"}
        assert set(scored.versions[30:]) == {version}
        assert scored.policies[0] == f"blend(ppo:{version},q-test,w=0.4)"
        rows = np.arange(40)
        assert np.all(np.isfinite(scored.logp))
        np.testing.assert_allclose(
            np.exp(scored.logp), scored.probabilities[rows, scored.chosen], rtol=1e-6
        )
        assert np.all(mask[rows, scored.chosen])  # never a padded slot
