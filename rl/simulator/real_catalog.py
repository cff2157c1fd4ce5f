"""Ready-made simulators on the real catalog (the defaults of the CLI and the benchmark).

Songs: the real Spotify catalog (durations from ``duration_ms``, popularity from
``track_popularity``) with the VAE latents of rl/songs/embedding.py (trained on first use).
Policy: the myopic logging policy (rl/decision/policies.py). Skip thresholds: calibrated to the real
MSSD shares on a pilot population (rl/simulator/calibration.py) unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rl.decision.observation import ObservationLayout
from rl.decision.policies import DecisionPolicy, ListenProbabilityModel, MyopicListenPolicy
from rl.feedback.reward import RewardConfig
from rl.simulator.calibration import Calibration, calibrate_skip_thresholds
from rl.simulator.config import SimulatorConfig
from rl.simulator.corpus import Corpus, build_corpus
from rl.simulator.simulation import Simulator
from rl.songs.catalog import load_catalog


def catalog_corpus(
    k: int = 4,
    config: SimulatorConfig | None = None,
    seed: int = 0,
    embedding_uri: str | None = None,
    catalog_uri: str | None = None,
) -> Corpus:
    """The real catalog with its VAE latents, as a simulator corpus."""
    from rl.songs.embedding import ensure_song_embedding

    embedding = ensure_song_embedding(embedding_uri, catalog_uri)
    metadata = load_catalog(catalog_uri).metadata.reindex(embedding.track_ids)
    return build_corpus(
        embedding.latents,
        embedding.track_ids,
        k,
        config or SimulatorConfig(),
        np.random.default_rng(seed),
        durations_s=metadata["duration_ms"].to_numpy(np.float64) / 1000.0,
        popularity=metadata["track_popularity"].to_numpy(np.float64),
    )


def default_logging_policy(
    layout: ObservationLayout, corpus: Corpus, temperature: float = 0.5, epsilon: float = 0.1
) -> MyopicListenPolicy:
    """The incumbent myopic policy with the analytic listen model scaled to the corpus."""
    return MyopicListenPolicy(
        ListenProbabilityModel(layout, corpus.latent_scale),
        temperature=temperature,
        epsilon=epsilon,
    )


@dataclass
class BuiltSimulator:
    simulator: Simulator
    corpus: Corpus
    policy: DecisionPolicy
    layout: ObservationLayout
    calibration: Calibration | None


def build_simulator(
    n_users: int,
    k: int = 4,
    seed: int = 0,
    corpus: Corpus | None = None,
    policy: DecisionPolicy | None = None,
    config: SimulatorConfig | None = None,
    reward_config: RewardConfig | None = None,
    calibrate: bool = True,
    target_shares: dict[str, float] | None = None,
) -> BuiltSimulator:
    """A simulator of ``n_users`` on ``corpus`` (default: the real catalog).

    With ``calibrate`` the skip thresholds are first fitted to ``target_shares``
    (default: the real MSSD rows) on a pilot population with another seed.
    """
    config = config or SimulatorConfig()
    corpus = corpus or catalog_corpus(k, config, seed)
    layout = ObservationLayout(k=k, latent_dim=corpus.latent_dim)
    policy = policy or default_logging_policy(layout, corpus)
    calibration = None
    if calibrate:
        if target_shares is None:
            from rl.feedback.importers.mssd import mssd_skip_shares

            target_shares = mssd_skip_shares()
        calibration = calibrate_skip_thresholds(
            corpus, policy, layout, target_shares, config, seed=seed + 7_919
        )
        config = calibration.config
    simulator = Simulator(
        corpus, n_users, policy, layout, config=config, reward_config=reward_config, seed=seed + 1
    )
    return BuiltSimulator(simulator, corpus, policy, layout, calibration)
