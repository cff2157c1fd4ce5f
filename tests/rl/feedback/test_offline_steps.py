"""Log -> RLlib offline rows: a real Ray Data round trip (simulate, write the log,
ray.data.read_parquet, group by session, step rows), checked against the simulator."""

import numpy as np
import pytest

from rl.decision.observation import ObservationLayout
from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy
from rl.feedback.log import FeedbackLogWriter, read_decisions, read_decisions_table
from rl.feedback.offline_steps import (
    OFFLINE_SCHEMA,
    SessionStepBuilder,
    UnknownTrackError,
    decisions_to_offline_steps,
)
from rl.feedback.reward import RewardConfig
from rl.simulator import Simulator, SimulatorConfig, build_corpus

LAYOUT = ObservationLayout(k=4)


@pytest.fixture(scope="module")
def simulated_log(tmp_path_factory):
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((500, 5)).astype(np.float32)
    track_ids = [f"s{i:04d}" for i in range(500)]
    corpus = build_corpus(latents, track_ids, 4, SimulatorConfig(), rng)
    policy = MyopicListenPolicy(ListenProbabilityModel(LAYOUT, corpus.latent_scale))
    simulator = Simulator(corpus, 150, policy, LAYOUT, seed=1)
    log = str(tmp_path_factory.mktemp("log"))
    with FeedbackLogWriter(log, k=4, n_betas=4) as writer:
        simulator.run(4, writer=writer)
    return log, latents, track_ids, policy, simulator


def test_session_step_builder_rebuilds_what_the_policy_saw(simulated_log):
    log, latents, track_ids, policy, _ = simulated_log
    decisions = read_decisions_table(log)
    steps = SessionStepBuilder(latents, track_ids, LAYOUT)(decisions)
    assert steps.schema == OFFLINE_SCHEMA and steps.num_rows == decisions.num_rows
    obs = np.asarray(steps["obs"].to_pylist(), np.float32)
    actions = steps["actions"].to_numpy()
    probabilities = policy.action_probabilities(obs)
    np.testing.assert_allclose(
        np.log(probabilities[np.arange(len(obs)), actions]),
        steps["action_logp"].to_numpy(),
        atol=1e-4,
    )


@pytest.mark.ray
def test_ray_data_round_trip_to_offline_steps(simulated_log, ray_local):
    log, latents, track_ids, _, simulator = simulated_log
    dataset = read_decisions(log)
    assert dataset.count() == simulator.summary.decisions
    config = RewardConfig(like_weight=100.0)
    steps = decisions_to_offline_steps(
        dataset, latents, track_ids, LAYOUT, config, num_partitions=2
    ).to_pandas()
    assert len(steps) == simulator.summary.decisions
    assert set(steps.columns) == set(OFFLINE_SCHEMA.names)
    table = read_decisions_table(log).to_pandas()
    assert set(steps["eps_id"]) == set(table["session_id"])
    for _, episode in steps.groupby("eps_id"):
        episode = episode.sort_values("t")
        assert episode["t"].tolist() == list(range(len(episode)))
        assert episode["terminateds"].tolist() == [False] * (len(episode) - 1) + [True]
        assert not episode["truncateds"].any()
        obs = np.stack(episode["obs"].to_numpy())
        new_obs = np.stack(episode["new_obs"].to_numpy())
        assert obs.shape[1] == LAYOUT.size
        np.testing.assert_array_equal(new_obs[:-1], obs[1:])
        np.testing.assert_array_equal(new_obs[-1], obs[-1])
    merged = steps.merge(
        table.rename(columns={"session_id": "eps_id", "position": "t"}), on=["eps_id", "t"]
    )
    assert (merged["actions"] == merged["chosen_index"]).all()
    np.testing.assert_allclose(merged["action_logp"], merged["behaviour_logp"], rtol=1e-6)
    expected = merged["listen_fraction"].where(
        merged["skip_level"] == 3, merged["skip_level"].map({0: -1.0, 1: -0.5, 2: -0.2})
    )
    np.testing.assert_allclose(
        merged["rewards"], expected + 100.0 * merged["liked"], rtol=1e-5, atol=1e-6
    )


@pytest.mark.ray
def test_write_offline_steps_writes_parquet(simulated_log, ray_local, tmp_path):
    import pyarrow.parquet as pq

    from rl.feedback.offline_steps import write_offline_steps

    log, latents, track_ids, _, simulator = simulated_log
    count = write_offline_steps(
        log, str(tmp_path / "steps"), latents, track_ids, LAYOUT, days=[0], num_partitions=2
    )
    table = pq.read_table(tmp_path / "steps")
    assert count == table.num_rows == read_decisions_table(log, days=[0]).num_rows
    assert table.schema.field("obs").type == OFFLINE_SCHEMA.field("obs").type


def test_unknown_tracks_raise_or_get_zero_latents(simulated_log):
    log, latents, track_ids, _, _ = simulated_log
    decisions = read_decisions_table(log).slice(0, 20)
    with pytest.raises(UnknownTrackError, match="no latent"):
        SessionStepBuilder(latents[:10], track_ids[:10], LAYOUT)(decisions)
    steps = SessionStepBuilder(latents[:10], track_ids[:10], LAYOUT, unknown_tracks="zeros")(
        decisions
    )
    assert steps.num_rows == 20
