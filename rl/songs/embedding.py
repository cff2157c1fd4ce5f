"""Song embedding: a VAE from the 11 normalised audio features to a 5-d latent (the blog).

Where it sits: catalog -> **VAE** -> latents -> kNN index (retrieval) -> policy. The
encoder mean mu(x) is a song's latent; the decoder only exists to train it.

Objective (Kingma & Welling, 2014), per song x in [0,1]^11:
    L(x) = ||x - dec(z)||^2 + kl_weight * KL(N(mu, sigma^2) || N(0, I)),  z = mu + sigma * eps
A ``kl_weight`` below 1 (a beta-VAE) keeps the latent informative about genre-level
structure instead of collapsing toward the prior.

A checkpoint (``<uri>/checkpoint.pt``) holds weights, config, scaler and training metrics;
``<uri>/latents.parquet`` holds every catalog song's latent for fast loading.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from tqdm import tqdm

from rl import paths, storage
from rl.config_checks import require_at_least, require_positive, require_range
from rl.songs.catalog import FEATURE_COLUMNS, Catalog, FeatureScaler, load_catalog

N_FEATURES = len(FEATURE_COLUMNS)


@dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of the song VAE."""

    latent_dim: int = 5
    """Latent size; the blog uses 5."""
    hidden_sizes: tuple[int, ...] = (64, 32)
    """Encoder hidden layers (the decoder mirrors them)."""
    kl_weight: float = 0.02
    """Weight of the KL term (beta-VAE); 1.0 is the plain VAE. Range (0, 1]."""
    feature_weights: tuple[float, ...] = (1, 1, 0.3, 1, 0.3, 1, 1, 1, 1, 1, 1)
    """Reconstruction weight per feature (FEATURE_COLUMNS order). ``key`` (a nominal pitch
    class) and ``mode`` (major/minor) get 0.3: they say little about how a song sounds,
    and at full weight they take a large share of the 5 latent dimensions."""
    epochs: int = 40
    """Passes over the training split."""
    batch_size: int = 256
    learning_rate: float = 2e-3
    validation_fraction: float = 0.1
    """Share of songs held out to report validation reconstruction error, in [0, 0.5)."""
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least(self, 1, "latent_dim")
        if not self.hidden_sizes or any(size < 1 for size in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}")
        require_range(self, "kl_weight", 0.0, 1.0, open_low=True)
        if len(self.feature_weights) != N_FEATURES or min(self.feature_weights) < 0:
            raise ValueError(
                f"feature_weights must be {N_FEATURES} non-negative numbers, got {self.feature_weights}"
            )
        require_at_least(self, 1, "epochs", "batch_size")
        require_positive(self, "learning_rate")
        require_range(self, "validation_fraction", 0.0, 0.5, open_high=True)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> VAEConfig:
        state = dict(state)
        state["hidden_sizes"] = tuple(state["hidden_sizes"])
        state["feature_weights"] = tuple(state["feature_weights"])
        return cls(**state)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers)


class SongVAE(nn.Module):
    """Gaussian encoder q(z|x) and a sigmoid decoder back to [0,1]^11."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        hidden = list(config.hidden_sizes)
        self.encoder = _mlp([N_FEATURES, *hidden])
        self.mean = nn.Linear(hidden[-1], config.latent_dim)
        self.log_variance = nn.Linear(hidden[-1], config.latent_dim)
        self.decoder = nn.Sequential(
            _mlp([config.latent_dim, *reversed(hidden)]),
            nn.Linear(hidden[0], N_FEATURES),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(x)
        return self.mean(hidden), self.log_variance(hidden).clamp(-10.0, 10.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_variance = self.encode(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance)
        return self.decoder(z), mean, log_variance


def vae_loss(
    x: torch.Tensor,  # (B, F)
    reconstruction: torch.Tensor,  # (B, F)
    mean: torch.Tensor,  # (B, L)
    log_variance: torch.Tensor,  # (B, L)
    kl_weight: float,
    feature_weights: torch.Tensor,  # (F,)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, unweighted reconstruction MSE, KL), each averaged over the batch."""
    squared_error = (reconstruction - x) ** 2
    kl = (-0.5 * (1 + log_variance - mean**2 - log_variance.exp()).sum(dim=1)).mean()
    # Reconstruction summed over features (the Gaussian log-likelihood), so the KL weight
    # means the same thing whatever the feature count.
    total = (squared_error * feature_weights).sum(dim=1).mean() + kl_weight * kl
    return total, squared_error.mean(), kl


@dataclass
class SongEmbedding:
    """A trained VAE with the latents of every catalog song."""

    config: VAEConfig
    scaler: FeatureScaler
    model: SongVAE
    track_ids: np.ndarray  # (N,)
    latents: np.ndarray  # (N, latent_dim) float32
    metrics: dict[str, Any] = field(default_factory=dict)

    def encode(self, raw_features: np.ndarray) -> np.ndarray:
        """(B, 11) raw (un-normalised) audio features -> (B, latent_dim) latents."""
        raw_features = np.atleast_2d(np.asarray(raw_features, dtype=np.float64))
        if raw_features.shape[1] != N_FEATURES:
            raise ValueError(f"expected (B, {N_FEATURES}) features, got {raw_features.shape}")
        return self.encode_normalised(self.scaler.transform(raw_features))

    def encode_normalised(self, normalised: np.ndarray) -> np.ndarray:
        """(B, 11) features already in [0,1] -> (B, latent_dim) encoder means."""
        with torch.no_grad():
            mean, _ = self.model.encode(torch.as_tensor(normalised, dtype=torch.float32))
        return mean.numpy()

    def reconstruct_normalised(self, normalised: np.ndarray) -> np.ndarray:
        """Decode the encoder mean: the deterministic reconstruction used for MSE reports."""
        with torch.no_grad():
            mean, _ = self.model.encode(torch.as_tensor(normalised, dtype=torch.float32))
            return self.model.decoder(mean).numpy()

    def save(self, uri: str) -> None:
        storage.write_torch(
            storage.join(uri, "checkpoint.pt"),
            {
                "config": asdict(self.config),
                "scaler": self.scaler.to_dict(),
                "state_dict": self.model.state_dict(),
                "metrics": self.metrics,
            },
        )
        table = pa.table(
            {"track_id": self.track_ids.astype(str)}
            | {f"z{i}": self.latents[:, i] for i in range(self.latents.shape[1])}
        )
        filesystem, path = storage.resolve(storage.join(uri, "latents.parquet"))
        pq.write_table(table, path, filesystem=filesystem)


def load_song_embedding(uri: str | None = None) -> SongEmbedding:
    """Load a saved embedding (checkpoint + latents) from ``uri``."""
    uri = uri or paths.default_embedding_uri()
    checkpoint_uri = storage.join(uri, "checkpoint.pt")
    if not storage.exists(checkpoint_uri):
        raise FileNotFoundError(
            f"no song embedding at {uri}; train one with `encore train-embedding --out {uri}`"
        )
    state = storage.read_torch(checkpoint_uri)
    config = VAEConfig.from_dict(state["config"])
    model = SongVAE(config)
    model.load_state_dict(state["state_dict"])
    model.eval()
    filesystem, path = storage.resolve(storage.join(uri, "latents.parquet"))
    table = pq.read_table(path, filesystem=filesystem)
    latents = np.stack(
        [table[f"z{i}"].to_numpy() for i in range(config.latent_dim)], axis=1
    ).astype(np.float32)
    return SongEmbedding(
        config=config,
        scaler=FeatureScaler.from_dict(state["scaler"]),
        model=model,
        track_ids=table["track_id"].to_numpy(zero_copy_only=False).astype(object),
        latents=latents,
        metrics=state.get("metrics", {}),
    )


def train_song_embedding(
    catalog: Catalog, config: VAEConfig | None = None, progress: bool = True
) -> SongEmbedding:
    """Fit the scaler and the VAE on the catalog; report per-epoch MSE and KL."""
    config = config or VAEConfig()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    scaler = FeatureScaler.fit(catalog.features)
    normalised = scaler.transform(catalog.features)
    order = rng.permutation(len(normalised))
    n_validation = int(round(config.validation_fraction * len(normalised)))
    validation_rows, train_rows = order[:n_validation], order[n_validation:]
    train_x = torch.as_tensor(normalised[train_rows])
    validation_x = torch.as_tensor(normalised[validation_rows])

    feature_weights = torch.as_tensor(config.feature_weights, dtype=torch.float32)
    model = SongVAE(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    started = time.perf_counter()
    epochs = tqdm(range(config.epochs), desc="VAE", unit="epoch", disable=not progress)
    for epoch in epochs:
        model.train()
        permutation = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(train_x), config.batch_size):
            batch = train_x[permutation[start : start + config.batch_size]]
            reconstruction, mean, log_variance = model(batch)
            loss, _, _ = vae_loss(
                batch, reconstruction, mean, log_variance, config.kl_weight, feature_weights
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            train_mse, train_kl = _evaluate(model, train_x, config.kl_weight, feature_weights)
            val_mse, val_kl = _evaluate(model, validation_x, config.kl_weight, feature_weights)
        history.append(
            {
                "epoch": epoch + 1,
                "train_mse": train_mse,
                "train_kl": train_kl,
                "val_mse": val_mse,
                "val_kl": val_kl,
            }
        )
        epochs.set_postfix(mse=f"{train_mse:.4f}", kl=f"{train_kl:.2f}", val_mse=f"{val_mse:.4f}")
    model.eval()
    embedding = SongEmbedding(
        config=config,
        scaler=scaler,
        model=model,
        track_ids=catalog.track_ids.astype(object),
        latents=np.empty((0, config.latent_dim)),
    )
    embedding.latents = embedding.encode_normalised(normalised)
    if len(validation_rows):
        reconstruction = embedding.reconstruct_normalised(normalised[validation_rows])
        per_feature = ((reconstruction - normalised[validation_rows]) ** 2).mean(axis=0)
    else:
        per_feature = np.full(N_FEATURES, np.nan)
    embedding.metrics = {
        "history": history,
        "validation_mse_per_feature": dict(zip(FEATURE_COLUMNS, per_feature.tolist(), strict=True)),
        "validation_mse": float(np.mean(per_feature)),
        "train_seconds": time.perf_counter() - started,
        "n_train": int(len(train_rows)),
        "n_validation": int(n_validation),
    }
    return embedding


def _evaluate(
    model: SongVAE, x: torch.Tensor, kl_weight: float, feature_weights: torch.Tensor
) -> tuple[float, float]:
    if len(x) == 0:
        return float("nan"), float("nan")
    mean, log_variance = model.encode(x)
    _, mse, kl = vae_loss(x, model.decoder(mean), mean, log_variance, kl_weight, feature_weights)
    return float(mse), float(kl)


def ensure_song_embedding(
    uri: str | None = None, catalog_uri: str | None = None, progress: bool = True
) -> SongEmbedding:
    """Load the embedding at ``uri``; train and save the default one first if absent."""
    uri = uri or paths.default_embedding_uri()
    if storage.exists(storage.join(uri, "checkpoint.pt")):
        return load_song_embedding(uri)
    embedding = train_song_embedding(load_catalog(catalog_uri), progress=progress)
    embedding.save(uri)
    return embedding
