import numpy as np
import pytest

from rl.decision.observation import ObservationLayout
from services.core.user_state import UserStateStore, build_observations, day_of, listened_from

LAYOUT = ObservationLayout(k=3, latent_dim=2, betas=(0.5, 0.9))


def naive_states(listen_days: set[int], until_day: int, betas) -> np.ndarray:
    """Reference: the paper's daily EMA applied one day at a time from day 0."""
    state = np.zeros(len(betas))
    for day in range(until_day):
        state = np.asarray(betas) * state + (1 - np.asarray(betas)) * (day in listen_days)
    return state


def test_relationship_state_matches_the_daily_ema():
    store = UserStateStore(LAYOUT, default_taste=np.zeros(2))
    listen_days = [0, 0, 3, 4, 9]  # two listens on day 0 count once
    for day in range(31):
        # Decision time (start of the day), then that day's listens.
        expected = naive_states({d for d in listen_days if d < day}, day, LAYOUT.betas)
        got = store.relationship("u", ["song", "other"], day)
        np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(got[1], 0.0)
        for _ in range(listen_days.count(day)):
            store.record_listen("u", "song", np.ones(2), day)


def test_taste_moves_toward_listened_songs_and_memory_is_bounded():
    store = UserStateStore(
        LAYOUT, default_taste=np.zeros(2), taste_rate=0.5, max_users=2, max_pending=1
    )
    store.record_listen("a", "s", np.array([2.0, 0.0]), day=1)
    np.testing.assert_allclose(store.user("a").taste, [1.0, 0.0])
    store.user("b"), store.user("c")
    assert store.n_users == 2  # "a" was least recently seen
    np.testing.assert_array_equal(store.user("a").taste, [0.0, 0.0])


def test_session_positions_count_up():
    store = UserStateStore(LAYOUT, default_taste=np.zeros(2))
    assert [store.next_position("u", "s1") for _ in range(3)] == [0, 1, 2]
    assert store.next_position("u", "s2") == 0


def test_observations_pad_missing_candidates_with_mask_zero():
    obs = build_observations(
        LAYOUT, np.ones((2, 2)), np.zeros((2, 2)), np.array([3, 23]), np.array([0, 6]),
        [np.ones((3, 2)), np.full((1, 2), 7.0)], [np.zeros((3, 2)), np.full((1, 2), 0.5)],
    )  # fmt: skip
    parts = LAYOUT.split(obs)
    np.testing.assert_array_equal(parts["candidate_mask"], [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(parts["candidate_latents"][1, 0], [7.0, 7.0])
    np.testing.assert_array_equal(parts["candidate_relationship"][1, 1:], 0.0)


def test_listened_rule_and_days():
    assert listened_from(0.2, duration_s=200.0, skip_level=1)  # 40 s
    assert not listened_from(0.1, duration_s=200.0, skip_level=0)  # 20 s
    assert listened_from(0.6, duration_s=None, skip_level=0)
    assert day_of(86_400 * 3 + 5) == 3


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="taste_rate must be in"):
        UserStateStore(LAYOUT, np.zeros(2), taste_rate=0.0)
    with pytest.raises(ValueError, match="max_pending must be >= 1"):
        UserStateStore(LAYOUT, np.zeros(2), max_pending=0)
