"""The served app's configuration: one frozen, validated dataclass.

Where it sits: ``services.app.build_app(args)`` turns ``serve_config.yaml``'s ``args`` (or
``encore serve`` flags) into a ``ServiceConfig`` and hands it to every deployment. Every
storage location is a URI (rl/storage.py) except the journal, which must be a local disk.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from rl import paths
from rl.config_checks import (
    LOG_ENGINES,
    require_at_least,
    require_choice,
    require_fraction,
    require_positive,
)
from rl.decision.observation import DEFAULT_BETAS, ObservationLayout

if TYPE_CHECKING:
    from rl.songs.embedding import SongEmbedding

QUIET_LOGS: dict[str, Any] = {"enable_access_log": False, "log_level": "WARNING"}
"""Serve logging of every deployment and the proxies: one access-log line per request
costs measurable CPU per request on 2 cores; errors and warnings are still logged."""


def batching_deployment(num_cpus: float) -> dict[str, Any]:
    """``@serve.deployment`` options of a model deployment whose callers send batches
    (Embedder, Retriever, Scorer): quiet logs, ``num_cpus`` per replica, one or two
    replicas autoscaled at 8 ongoing requests each, and room for a full batch of
    concurrent callers (Serve's default ``max_ongoing_requests``, 5, caps every batch at 5)."""
    return {
        "logging_config": QUIET_LOGS,
        "ray_actor_options": {"num_cpus": num_cpus},
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8},
        "max_ongoing_requests": 16,
    }


@dataclass(frozen=True)
class ServiceConfig:
    """Settings of the served app (defaults: the embedded single-machine setup)."""

    data_root: str = field(default_factory=paths.data_dir)
    """Root of generated data; the defaults below live under it."""
    embedding_uri: str = ""
    """Song VAE (rl/songs/embedding.py); default ``<data_root>/embedding``. Trained once if absent."""
    catalog_uri: str = ""
    """Catalog parquet for track names and durations; default the shared catalog."""
    registry_uri: str = ""
    """Model registry (rl/registry.py) whose production pointer the Scorer follows;
    default ``<data_root>/registry``."""
    index_uri: str = ""
    """Retrieval index registry (rl/songs/index_registry.py, ``encore index build``) whose
    production pointer the Retriever follows; default ``<data_root>/indexes``. Until an
    index is promoted the Retriever serves an exact KD-tree over the embedding."""
    log_uri: str = ""
    """Decision log the served feedback is appended to; default ``<data_root>/logs/service``."""
    journal_dir: str = ""
    """Local write-ahead journal of acknowledged feedback; default ``<data_root>/serving/journal``."""
    k: int = 4
    """Candidates per decision: the policy's k (ObservationLayout.k). >= 1."""
    betas: tuple[float, ...] = DEFAULT_BETAS
    """Forgetting factors of the relationship state; must match the trained policy."""
    poll_interval_s: float = 1.0
    """How often each Scorer replica checks the registry's production pointer. > 0."""
    flush_interval_s: float = 5.0
    """Feedback is written from the journal to parquet at least this often. > 0."""
    fsync: bool = True
    """fsync every feedback before acknowledging it (durability)."""
    batch_max_size: int = 32
    """Most requests the ingress groups into one call per hop. >= 1."""
    batch_wait_s: float = 0.002
    """How long the ingress waits to fill a batch of HTTP requests, in seconds. >= 0."""
    grpc_batch_wait_s: float = 0.005
    """The same for gRPC requests, which Serve's gRPC ingress hands over one after another
    rather than together: a longer wait lets a batch gather them. >= 0."""
    skip_lone_batch_wait: bool = True
    """A recommendation with nothing else in flight, while recent batches held one request
    each, skips ``batch_wait_s`` (and the Scorer its 1 ms): no one is coming to share its
    batch (services/core/batch_wait.py). False: always wait."""
    neighbour_cache_width: int = 20
    """Nearest songs precomputed per catalog song, so catalog requests whose exclude list
    leaves k of them skip the Retriever hop (services/core/neighbour_cache.py); 0 = off. >= 0."""
    max_pending: int = 200_000
    """Decisions awaiting feedback kept in memory (oldest dropped). >= 1."""
    max_users: int = 100_000
    """Users whose state the in-process store keeps (least recently seen dropped). >= 1."""
    user_store: str = "memory"
    """Where the listeners' state and pending decisions live: "memory" (this process; one
    Ingress replica) or "redis://host:port/db" (shared by any number of Ingress replicas,
    services/core/redis_user_store.py)."""
    user_store_namespace: str = "encore"
    """Key prefix in a shared store (several apps may share one Redis)."""
    pending_ttl_s: float = 86_400.0
    """How long a decision waits for its feedback in a shared store. > 0."""
    ingress_min_replicas: int = 1
    """Fewest Ingress replicas (``start_app``; serve_config.yaml sets its own). >= 1."""
    ingress_max_replicas: int = 1
    """Most Ingress replicas Serve may scale to. > 1 needs a shared ``user_store``: feedback
    may reach a replica other than the one that made its decision."""
    scorer_min_replicas: int = 1
    """Fewest Scorer replicas (at most 2 on 2 cores by default); 2 keeps answering while
    one replica is lost. >= 1."""
    shed_queue_length: int = 128
    """Recommendations one Ingress replica holds at once; past it a new one is answered at
    once with 503 + Retry-After (gRPC: RESOURCE_EXHAUSTED) instead of queueing into
    timeouts (services/load_shedding.py). 0 = never shed. >= 0."""
    rebuild_user_state: bool = True
    """At start, rebuild the user state from the decision log (the in-process store every
    time; a shared store only if it was never built) (services/user_state_rebuild.py)."""
    user_state_engine: str = "pyarrow"
    """How that start-time rebuild reads the log: "pyarrow" (in the replica) or "ray"
    (Ray Data tasks; for logs too big for one process)."""
    admin_token_env: str = "ENCORE_ADMIN_TOKEN"
    """Environment variable holding the admin token; admin endpoints are off when unset."""
    ab_arms: dict[str, float] = field(default_factory=dict)
    """A/B split by user hash: arm name -> share ({} = no test; shares are normalised,
    finite and >= 0). Arms: ``production`` (the registry's production version, or the
    logging policy before one exists), ``logging``, ``q-<variant>`` for each of
    ``longterm_variants`` and ``blend``; the last two need ``longterm_log_uri``."""
    longterm_log_uri: str = ""
    """Log to fit the long-term Q-scorers on (rl/longterm/); "" = no long-term arms.
    Each Scorer replica fits them at startup (seconds for a small log)."""
    longterm_variants: tuple[str, ...] = ("personalised",)
    """Which Q-scorers become ``q-<variant>`` arms: control, personalised, unpersonalised,
    square-root."""
    longterm_temperature: float = 0.5
    """Served Q-scorers pick by a softmax over log-scores / temperature (not the paper's
    argmax) so every candidate keeps a non-zero logged propensity. > 0; lower = greedier."""
    longterm_model: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``rl.longterm.fitted_models.ModelConfig`` for the served Q-scorers, e.g.
    ``{"horizon_days": 30}``; {} = the paper's defaults (60-day returns)."""
    longterm_engine: str = "ray"
    """How the Scorer reads the long-term log: "ray" (Ray Data) or "pyarrow" (in-process,
    for small logs)."""
    blend_variant: str = "personalised"
    """The Q-scorer the ``blend`` arm mixes with production (one of the variants above)."""
    blend_weight: float = 0.5
    """w of the ``blend`` arm, in [0, 1]: it picks with probability proportional to
    pi_production^(1 - w) * q^w (services/core/scoring.py ``blend_probabilities``);
    0 = production alone, 1 = the Q-scorer alone."""
    seed: int | None = None
    """Seed of the sampled picks (None: fresh entropy per replica)."""
    exploration_epsilon: float = 0.05
    """epsilon of the default ``explore`` mode: the policy's greedy pick with probability
    1 - epsilon, else a uniformly random candidate; the exact propensity is logged. [0, 1]."""
    candidate_pool: str = ""
    """Multi-source candidate pool as SOURCE=COUNT,... (rl/decision/candidate_pool.py:
    song, taste, relationship, popular, sticky; the counts sum to k); "" = today's pool,
    the song's kNN. Popular/sticky come from the production version's song table."""

    def __post_init__(self) -> None:
        require_fraction(self, "exploration_epsilon")
        root = self.data_root
        defaults = {
            "embedding_uri": f"{root}/embedding",
            "catalog_uri": paths.default_catalog_uri(),
            "registry_uri": f"{root}/registry",
            "index_uri": f"{root}/indexes",
            "log_uri": f"{root}/logs/service",
            "journal_dir": f"{root}/serving/journal",
        }
        for name, value in defaults.items():
            if not getattr(self, name):
                object.__setattr__(self, name, value)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "longterm_variants", tuple(self.longterm_variants))
        object.__setattr__(self, "ab_arms", dict(self.ab_arms))
        object.__setattr__(self, "longterm_model", dict(self.longterm_model))
        require_at_least(self, 1, "k")
        require_positive(self, "poll_interval_s", "flush_interval_s")
        require_at_least(self, 1, "batch_max_size")
        require_at_least(self, 0, "batch_wait_s", "grpc_batch_wait_s", "neighbour_cache_width")
        require_at_least(self, 1, "max_pending", "max_users")
        if self.user_store != "memory" and not self.user_store.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError(
                f"user_store must be 'memory' or a redis:// URL, got {self.user_store!r}"
            )
        if not 1 <= self.ingress_min_replicas <= self.ingress_max_replicas:
            raise ValueError(
                "need 1 <= ingress_min_replicas <= ingress_max_replicas, got "
                f"{self.ingress_min_replicas} and {self.ingress_max_replicas}"
            )
        if self.ingress_max_replicas > 1 and self.user_store == "memory":
            raise ValueError(
                f"ingress_max_replicas={self.ingress_max_replicas} needs a shared user_store "
                "(redis://...): with the in-process store, feedback reaching another replica "
                "would not find its decision"
            )
        require_at_least(self, 1, "scorer_min_replicas")
        require_at_least(self, 0, "shed_queue_length")
        require_positive(self, "pending_ttl_s")
        require_choice(self, "user_state_engine", LOG_ENGINES)
        self._check_arms()
        _ = self.layout  # validates k and betas
        if self.candidate_pool:
            from rl.decision.candidate_pool import CandidatePoolConfig

            pool = CandidatePoolConfig.from_spec(self.candidate_pool)
            if pool.k != self.k:
                raise ValueError(f"candidate_pool has k={pool.k}, the served k={self.k}")

    def _check_arms(self) -> None:
        from services.core.longterm_arms import LONGTERM_VARIANTS

        for name, variants in (
            ("longterm_variants", self.longterm_variants),
            ("blend_variant", (self.blend_variant,)),
        ):
            unknown = sorted(set(variants) - set(LONGTERM_VARIANTS))
            if unknown:
                raise ValueError(
                    f"{name} names unknown Q-scorer(s) {unknown}; known: {list(LONGTERM_VARIANTS)}"
                )
        require_fraction(self, "blend_weight")
        require_positive(self, "longterm_temperature")
        require_choice(self, "longterm_engine", LOG_ENGINES)
        if self.longterm_model:
            from rl.longterm.fitted_models import ModelConfig

            try:
                ModelConfig(**self.longterm_model)
            except TypeError as exc:
                known = sorted(f.name for f in fields(ModelConfig))
                raise ValueError(
                    f"unknown longterm_model setting(s) in {sorted(self.longterm_model)}; "
                    f"known: {known}"
                ) from exc
        shares = list(self.ab_arms.values())
        if any(not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0 for w in shares):
            raise ValueError(f"ab_arms shares must be finite numbers >= 0, got {self.ab_arms}")
        if shares and sum(shares) <= 0:
            raise ValueError(f"ab_arms shares must not all be 0, got {self.ab_arms}")
        known_arms = {"production", "logging", "blend"} | {f"q-{v}" for v in self.longterm_variants}
        unknown = sorted(set(self.ab_arms) - known_arms)
        if unknown:
            hint = [a for a in unknown if a.startswith("q-")]
            raise ValueError(
                f"unknown A/B arm(s) {unknown}; known: {sorted(known_arms)}"
                + (
                    f" (a q-<variant> arm needs its variant in longterm_variants: {hint})"
                    if hint
                    else ""
                )
            )
        longterm = sorted(a for a in self.ab_arms if a.startswith("q-") or a == "blend")
        if longterm and not self.longterm_log_uri:
            raise ValueError(
                f"A/B arm(s) {longterm} need longterm_log_uri (the log to fit the Q-scorers on)"
            )

    @property
    def layout(self) -> ObservationLayout:
        return ObservationLayout(k=self.k, betas=self.betas)

    @property
    def admin_token(self) -> str | None:
        return os.environ.get(self.admin_token_env) or None

    @classmethod
    def from_args(cls, args: dict[str, Any] | None) -> ServiceConfig:
        args = dict(args or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"unknown service setting(s) {unknown}; known: {sorted(known)}")
        return cls(**args)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def song_embedding(self) -> SongEmbedding:
        """The served song VAE and latents at ``embedding_uri`` (trained once from
        ``catalog_uri`` if absent): what the Embedder, Retriever and Scorer load."""
        from rl.songs.embedding import ensure_song_embedding

        return ensure_song_embedding(self.embedding_uri, self.catalog_uri, progress=False)
