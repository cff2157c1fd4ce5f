"""Small simulated worlds shared by the simulator tests: random 5-d latents, the default
corpus construction, and the myopic logging policy (the real catalog is not needed)."""

import numpy as np

from rl.decision.observation import ObservationLayout
from rl.decision.policies import ListenProbabilityModel, MyopicListenPolicy
from rl.simulator import SimulatorConfig, build_corpus

LAYOUT = ObservationLayout(k=4)


def small_corpus(n_songs=800, seed=0, config=None):
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((n_songs, 5)).astype(np.float32)
    return build_corpus(
        latents, [f"s{i:05d}" for i in range(n_songs)], LAYOUT.k, config or SimulatorConfig(),
        rng, durations_s=rng.uniform(120, 320, n_songs), popularity=rng.uniform(0, 100, n_songs),
    )  # fmt: skip


def logging_policy(corpus):
    return MyopicListenPolicy(ListenProbabilityModel(LAYOUT, corpus.latent_scale))
