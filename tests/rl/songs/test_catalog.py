import numpy as np
import pandas as pd
import pytest

from rl.songs.catalog import (
    FEATURE_COLUMNS,
    CatalogError,
    FeatureScaler,
    catalog_from_frame,
    genre_coherence,
    load_catalog,
)


def _frame(n: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.random((n, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS))
    frame.insert(0, "track_id", [f"t{i}" for i in range(n)])
    frame["track_name"] = "song"
    frame["track_artist"] = "artist"
    frame["playlist_genre"] = "pop"
    frame["playlist_subgenre"] = "dance pop"
    return frame


def test_real_catalog_is_deduplicated_with_metadata(real_catalog):
    assert len(real_catalog) == 28356
    assert len(set(real_catalog.track_ids)) == len(real_catalog)
    assert real_catalog.features.shape == (28356, 11)
    assert set(real_catalog.genres()) == {"pop", "rock", "rap", "edm", "latin", "r&b"}
    assert real_catalog.metadata["playlist_subgenre"].nunique() == 24


def test_duplicate_rows_keep_the_first():
    frame = _frame(3)
    duplicate = frame.iloc[[0]].assign(playlist_genre="rock")
    catalog = catalog_from_frame(pd.concat([frame, duplicate]))
    assert len(catalog) == 3
    assert catalog.metadata.loc["t0", "playlist_genre"] == "pop"


def test_missing_column_is_named():
    with pytest.raises(CatalogError, match=r"missing required column\(s\) \['tempo'\]"):
        catalog_from_frame(_frame().drop(columns=["tempo"]))


def test_nan_values_are_counted_by_column():
    frame = _frame()
    frame.loc[[1, 3], "energy"] = np.nan
    with pytest.raises(CatalogError, match="column 'energy' has 2 NaN"):
        catalog_from_frame(frame)


def test_non_numeric_values_are_counted_by_column():
    frame = _frame()
    frame["loudness"] = frame["loudness"].astype(object)
    frame.loc[2, "loudness"] = "loud"
    with pytest.raises(CatalogError, match="column 'loudness' has 1 non-numeric"):
        catalog_from_frame(frame)


def test_infinite_values_and_missing_ids_are_reported():
    frame = _frame()
    frame.loc[0, "tempo"] = np.inf
    frame.loc[4, "track_id"] = None
    with pytest.raises(CatalogError) as error:
        catalog_from_frame(frame)
    assert "column 'tempo' has 1 infinite" in str(error.value)
    assert "column 'track_id' has 1 missing" in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="catalog not found"):
        load_catalog(str(tmp_path / "nope.parquet"))


def test_load_from_file_uri(tmp_path):
    path = tmp_path / "cat.parquet"
    _frame(4).to_parquet(path)
    assert len(load_catalog(f"file://{path}")) == 4


@pytest.mark.parametrize("method", ["quantile", "minmax"])
def test_scaler_maps_catalog_into_unit_interval_and_round_trips(real_catalog, method):
    scaler = FeatureScaler.fit(real_catalog.features, method=method)
    scaled = scaler.transform(real_catalog.features)
    assert scaled.min() >= 0.0 and scaled.max() <= 1.0
    restored = FeatureScaler.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(restored.transform(real_catalog.features[:50]), scaled[:50])
    # Monotone per feature: order of songs is preserved.
    for j in range(len(FEATURE_COLUMNS)):
        order = np.argsort(real_catalog.features[:, j], kind="stable")
        assert np.all(np.diff(scaled[order, j]) >= -1e-6)


def test_minmax_scaler_matches_formula_and_clips():
    features = np.array([[0.0] * 11, [2.0] * 11, [1.0] * 11])
    scaler = FeatureScaler.fit(features, method="minmax")
    np.testing.assert_allclose(scaler.transform(features)[:, 0], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(scaler.transform(np.full((1, 11), 5.0)), 1.0)
    np.testing.assert_allclose(scaler.transform(np.full((1, 11), -5.0)), 0.0)


def test_quantile_scaler_is_the_empirical_cdf():
    column = np.arange(101, dtype=float)
    features = np.repeat(column[:, None], 11, axis=1)
    scaled = FeatureScaler.fit(features, n_quantiles=101).transform(features)
    np.testing.assert_allclose(scaled[:, 0], column / 100, atol=1e-6)


def test_scaler_rejects_bad_shapes_and_methods():
    with pytest.raises(ValueError, match="features must be"):
        FeatureScaler.fit(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="method must be"):
        FeatureScaler.fit(np.zeros((3, 11)), method="zscore")


def test_genre_coherence_against_naive_count():
    genres = np.array(["a", "a", "b", "b"])
    neighbours = np.array([[1, 2], [0, 3], [3, 0], [2, 1]])
    coherence, chance = genre_coherence(neighbours, genres)
    naive = sum(genres[n] == genres[i] for i, row in enumerate(neighbours) for n in row) / 8
    assert coherence == pytest.approx(naive) == 0.5
    assert chance == pytest.approx(0.5)
