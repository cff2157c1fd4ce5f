"""The recommender side of the simulator: candidates, observations, the policy's pick.

RecSim NG's "recommender" entity. For each live session: the kNN candidates of the
current song come from the corpus's precomputed neighbour table (songs already played in
the session excluded), or, with a ``SimulatorCandidatePool``, a multi-source pool
(rl/decision/candidate_pool.py: the song's and the taste's kNN, the user's library,
popular and sticky songs of the learned song table); the observation is built with the shared ``ObservationLayout``
(exactly what the served Scorer builds from a request), and a ``DecisionPolicy`` gives
the probabilities the pick is drawn from. The probability of the pick is the propensity
that goes into the log as ``behaviour_logp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rl.decision.candidate_pool import (
    CandidatePool,
    CandidatePoolConfig,
    exploration_draws,
    merge_pool,
    ranked_by_strength,
    top_rows_by,
)
from rl.decision.observation import DEFAULT_BETAS, ObservationLayout, encode_context
from rl.decision.policies import DecisionPolicy, sample_actions
from rl.simulator.corpus import Corpus
from rl.simulator.kernels import retrieve_candidates_kernel


def retrieve_candidates(
    neighbours: np.ndarray,  # (N, W) int32 neighbour table
    current: np.ndarray,  # (B,) song rows
    history: np.ndarray,  # (B, H) song rows played in the session, -1 padding
    k: int,
) -> np.ndarray:
    """(B, k) int64 candidate rows, nearest first, -1 padding when fewer than k remain
    (a compiled loop: rl/simulator/kernels.py)."""
    return retrieve_candidates_kernel(
        neighbours, np.asarray(current, np.int64), np.asarray(history, np.int64), k
    )


class SongPopularitySource(Protocol):
    """What the exploration sources need of a song table aligned to the corpus rows."""

    listens: np.ndarray  # (N,)
    popularity: np.ndarray  # (N,)
    stickiness: np.ndarray  # (N,)
    discoveries: np.ndarray  # (N,)


class SimulatorCandidatePool:
    """The multi-source candidate pool over the simulator's state (one per Simulator).

    Sources, as the service gathers them: ``song`` = the corpus's neighbour table of the
    song playing; ``taste`` = exact kNN of the user's taste latent (queried once per user
    and day: the taste drifts at the end of a day); ``relationship`` = the user's library,
    strongest long-memory relationship first (the last beta's state, decayed to today);
    ``popular`` / ``sticky`` = uniform draws among the ``explore_top`` songs of
    ``song_table`` with the most listens / the highest stickiness S_i among songs with a
    discovery (none without a table: those slots are backfilled). Excluded: the session's
    history and the song playing. Deterministic given ``config.seed``.
    """

    def __init__(
        self,
        config: CandidatePoolConfig,
        corpus: Corpus,
        song_table: SongPopularitySource | None = None,
        betas: tuple[float, ...] = DEFAULT_BETAS,
    ) -> None:
        from rl.songs.retrieval import KnnIndex

        self.config = config
        self.last_beta = float(betas[-1])
        self.corpus = corpus
        self.rng = np.random.default_rng(config.seed)
        self.index = KnnIndex(corpus.latents, corpus.track_ids) if config.quota("taste") else None
        self.top: dict[str, np.ndarray] = {"popular": np.zeros(0, np.int64)}
        self.top["sticky"] = self.top["popular"]
        if song_table is not None:
            if len(song_table.popularity) != len(corpus):
                raise ValueError(
                    f"the song table has {len(song_table.popularity)} rows for {len(corpus)} "
                    "corpus songs: align it (SongFeatureTable.aligned(corpus.track_ids))"
                )
            self.top["popular"] = top_rows_by(
                song_table.popularity, config.explore_top, song_table.listens > 0
            )
            self.top["sticky"] = top_rows_by(
                song_table.stickiness, config.explore_top, song_table.discoveries > 0
            )
        self._taste_rows = np.zeros((0, 0), np.int64)
        self._taste_day = np.zeros(0, np.int64)

    def _taste_neighbours(self, state, users: np.ndarray, day: int) -> np.ndarray:
        """(B, W) kNN rows of the users' tastes, cached per user for the day."""
        assert self.index is not None
        width = min(self.config.k + 8, len(self.corpus))
        if len(self._taste_day) != state.n_users:
            self._taste_rows = np.full((state.n_users, width), -1, np.int64)
            self._taste_day = np.full(state.n_users, -1, np.int64)
        stale = np.unique(users[self._taste_day[users] != day])
        if len(stale):
            self._taste_rows[stale] = self.index.query(state.taste[stale], k=width).rows
            self._taste_day[stale] = day
        return self._taste_rows[users]

    def candidates(
        self,
        state,  # rl.simulator.user.UserState
        users: np.ndarray,  # (B,) user rows
        current: np.ndarray,  # (B,) song rows playing
        history: np.ndarray,  # (B, H) songs played in the session, -1 padding
        day: int,
    ) -> CandidatePool:
        config, batch = self.config, len(users)
        ranked: dict[str, np.ndarray] = {}
        for name in config.sources:
            quota = config.quota(name)
            if name == "song":
                ranked[name] = self.corpus.neighbours[current]
            elif name == "taste":
                ranked[name] = self._taste_neighbours(state, users, day)
            elif name == "relationship":
                # The longest memory's state, decayed to today without listens since.
                decay = np.maximum(day - state.library_state_day[users], 0)
                strength = state.library_state[users, :, -1] * np.power(self.last_beta, decay)
                width = min(state.library_item.shape[1], 2 * config.k + 8)
                ranked[name] = ranked_by_strength(state.library_item[users], strength, width)
            else:  # popular, sticky
                ranked[name] = exploration_draws(self.top[name], batch, 2 * quota + 2, self.rng)
        exclude = np.concatenate([history, np.asarray(current, np.int64)[:, None]], axis=1)
        return merge_pool(ranked, config, exclude)


class SongFeatureSource(Protocol):
    """Per-candidate song features learned from logs (rl/longterm/song_table.py), indexed
    by corpus row (``SongFeatureTable.aligned(corpus.track_ids)``)."""

    def candidate_features(self, rows: np.ndarray, taste: np.ndarray) -> np.ndarray:
        """(B, K) corpus rows and (B, D) tastes -> (B, K, F)."""
        ...


def observations_from_corpus(
    layout: ObservationLayout,
    corpus: Corpus,
    current: np.ndarray,  # (B,)
    taste: np.ndarray,  # (B, D)
    hour: np.ndarray,  # (B,)
    weekday: np.ndarray | int,
    candidates: np.ndarray,  # (B, K) rows, -1 padding
    relationship: np.ndarray,  # (B, K, R)
    song_features: SongFeatureSource | None = None,
) -> np.ndarray:
    """(B, layout.size) float32 observations; padded candidates get zero features.

    ``song_features`` fills the layout's per-candidate song features (needed when
    ``layout.song_feature_dim > 0``)."""
    mask = candidates >= 0
    candidate_latents = corpus.latents[np.maximum(candidates, 0)] * mask[..., None]
    weekday = np.broadcast_to(np.asarray(weekday), hour.shape)
    features = None
    if layout.song_feature_dim:
        if song_features is None:
            raise ValueError("the layout has song features: pass song_features")
        features = song_features.candidate_features(candidates, taste) * mask[..., None]
    return layout.build(
        current_latent=corpus.latents[current],
        user_taste=taste,
        context=encode_context(hour, weekday),
        candidate_latents=candidate_latents,
        candidate_relationship=relationship * mask[..., None],
        candidate_mask=mask,
        candidate_song_features=features,
    )


@dataclass(frozen=True)
class Decisions:
    """The policy's picks for B sessions."""

    probabilities: np.ndarray  # (B, K)
    actions: np.ndarray  # (B,) int64 chosen candidate index
    logp: np.ndarray  # (B,) float32 log-propensity of the pick


def decide(
    policies: Mapping[int, DecisionPolicy],
    arm_index: np.ndarray,  # (B,) which policy serves each session
    obs: np.ndarray,  # (B, size)
    rng: np.random.Generator,
) -> Decisions:
    """Ask each arm's policy for its sessions' probabilities, then draw the picks."""
    batch = len(obs)
    probabilities = None
    for arm, policy in policies.items():
        rows = np.flatnonzero(arm_index == arm)
        if not len(rows):
            continue
        arm_probabilities = np.asarray(policy.action_probabilities(obs[rows]), np.float64)
        if probabilities is None:
            probabilities = np.zeros((batch, arm_probabilities.shape[1]))
        probabilities[rows] = arm_probabilities
    if probabilities is None:
        raise ValueError("no policy serves these sessions")
    actions, logp = sample_actions(probabilities, rng)
    return Decisions(probabilities=probabilities, actions=actions, logp=logp)
