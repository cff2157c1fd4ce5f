import numpy as np
import pytest
import torch

from rl.songs.embedding import (
    SongVAE,
    VAEConfig,
    ensure_song_embedding,
    load_song_embedding,
    train_song_embedding,
    vae_loss,
)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="latent_dim must be >= 1, got 0"):
        VAEConfig(latent_dim=0)
    with pytest.raises(ValueError, match="kl_weight must be in"):
        VAEConfig(kl_weight=0)
    with pytest.raises(ValueError, match="feature_weights must be 11"):
        VAEConfig(feature_weights=(1.0,))


def test_shapes():
    model = SongVAE(VAEConfig(latent_dim=5, hidden_sizes=(16, 8)))
    x = torch.rand(7, 11)
    reconstruction, mean, log_variance = model(x)
    assert reconstruction.shape == (7, 11) and mean.shape == (7, 5) == log_variance.shape
    assert float(reconstruction.min()) >= 0 and float(reconstruction.max()) <= 1


def test_kl_term_against_closed_form_for_one_dimension():
    x = torch.zeros(1, 11)
    mean, log_variance = torch.tensor([[0.5]]), torch.tensor([[np.log(2.0)]])
    _, _, kl = vae_loss(x, x, mean, log_variance, 1.0, torch.ones(11))
    expected = 0.5 * (2.0 + 0.25 - 1.0 - np.log(2.0))  # KL(N(0.5, 2) || N(0, 1))
    assert float(kl) == pytest.approx(expected, rel=1e-6)


def test_a_training_step_lowers_the_loss():
    torch.manual_seed(0)
    config = VAEConfig(hidden_sizes=(16, 8))
    model = SongVAE(config)
    x = torch.rand(256, 11)
    weights = torch.ones(11)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_value() -> float:
        torch.manual_seed(1)
        reconstruction, mean, log_variance = model(x)
        return vae_loss(x, reconstruction, mean, log_variance, 0.02, weights)[0]

    before = loss_value()
    for _ in range(20):
        optimiser.zero_grad()
        loss_value().backward()
        optimiser.step()
    assert float(loss_value()) < float(before)


def test_training_reports_metrics_and_round_trips(small_catalog, tmp_path):
    config = VAEConfig(epochs=3, hidden_sizes=(16, 8))
    embedding = train_song_embedding(small_catalog, config, progress=False)
    assert embedding.latents.shape == (len(small_catalog), 5)
    assert len(embedding.metrics["history"]) == 3
    assert set(embedding.metrics["validation_mse_per_feature"]) >= {"tempo", "key"}
    assert embedding.metrics["n_validation"] == 200
    embedding.save(str(tmp_path))
    loaded = load_song_embedding(str(tmp_path))
    np.testing.assert_array_equal(loaded.latents, embedding.latents)
    np.testing.assert_array_equal(
        loaded.encode(small_catalog.features[:20]), embedding.encode(small_catalog.features[:20])
    )
    np.testing.assert_allclose(loaded.encode(small_catalog.features), embedding.latents, atol=1e-6)
    assert loaded.config == config


def test_same_seed_same_latents(small_catalog):
    config = VAEConfig(epochs=1, hidden_sizes=(16, 8))
    first = train_song_embedding(small_catalog, config, progress=False)
    second = train_song_embedding(small_catalog, config, progress=False)
    np.testing.assert_array_equal(first.latents, second.latents)


def test_missing_embedding_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="encore train-embedding"):
        load_song_embedding(str(tmp_path / "none"))


def test_default_embedding_meets_genre_coherence_target(trained_embedding, real_catalog):
    from rl.cli.embedding import embedding_quality

    quality = embedding_quality(trained_embedding.latents, real_catalog, k=4)
    assert quality["latent_over_chance"] >= 2.0
    assert quality["genre_coherence_raw_features"] > quality["chance"]


def test_ensure_reuses_a_saved_embedding(trained_embedding, tmp_path):
    trained_embedding.save(str(tmp_path))
    loaded = ensure_song_embedding(str(tmp_path))
    np.testing.assert_array_equal(loaded.latents, trained_embedding.latents)
