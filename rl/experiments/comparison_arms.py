"""The arms of ``encore compare-policies`` (rl/experiments/compare_policies.py): their
stable keys, and the two baselines refitted on the comparison's own log.

* ``refit_myopic_greedy``: the logging policy's listen model refitted on the log, greedy
  (``MYOPIC_ARM``);
* ``fit_q_personalised``: the paper's clickiness x (1 + <u, v_i>) fitted on the same log.
"""

from __future__ import annotations

import numpy as np

from rl.decision.observation import ObservationLayout
from rl.decision.policies import DecisionPolicy, MyopicListenPolicy
from rl.evaluation.in_simulator import LOGGING_ARM

MYOPIC_ARM = "myopic-greedy"
ACTOR_CRITIC_ARM = "actor-critic"
VALUE_DESIGNS = ("session", "return-days")
"""How the paper's value enters the actor-critic: ``session`` = the song table as input
only (the critic sees each candidate's stickiness), ``return-days`` = also the paper's
decomposition in the reward (immediate + w x listened x expected return days)."""
ARM_KEYS = (
    LOGGING_ARM,
    MYOPIC_ARM,
    ACTOR_CRITIC_ARM,
    "q-personalised",
    "ppo-session",
    "ppo-return-days",
    "bc",
    "marwil",
)


def refit_myopic_greedy(
    log_uri: str, embedding, layout: ObservationLayout, corpus
) -> DecisionPolicy:
    """The logging policy's listen model refitted on the log, taken greedily."""
    from rl.decision.policies import ListenProbabilityModel
    from rl.feedback.log import read_decisions_table
    from rl.feedback.offline_steps import SessionStepBuilder

    base = layout.without_song_features()
    table = read_decisions_table(log_uri, validate=False)
    if table.num_rows > 200_000:
        rows = np.sort(np.random.default_rng(0).choice(table.num_rows, 200_000, replace=False))
        table = table.take(rows)
    builder = SessionStepBuilder(embedding.latents, [str(t) for t in embedding.track_ids], base)
    model = ListenProbabilityModel(base, corpus.latent_scale).fit(
        builder.observations(table),
        table["chosen_index"].to_numpy(),
        table["listened"].to_numpy(zero_copy_only=False),
    )
    return MyopicListenPolicy(model, temperature=1e-3, epsilon=0.0, name=MYOPIC_ARM)


def fit_q_personalised(log_uri: str, corpus, layout: ObservationLayout, horizon_days: int):
    """The paper's personalised arm fitted on the same log (a window that fits in it)."""
    from rl.longterm.fitted_models import ModelConfig, fit_longterm_models
    from rl.longterm.q_scoring import QScoringPolicy

    models = fit_longterm_models(
        log_uri,
        corpus.track_ids,
        corpus.latents,
        layout.betas,
        ModelConfig(horizon_days=horizon_days),
    )
    # The stickiness model's u is [taste, activity share]; the observation has the taste
    # only, so the rest is filled with its training mean (as the served q-arms do).
    from services.core.longterm_arms import PopulationUserFeatures, population_user_features

    scorer = PopulationUserFeatures(
        models.scorers()["personalised"], population_user_features(models, layout.latent_dim)
    )
    return QScoringPolicy(scorer, layout.without_song_features(), corpus.latents)
