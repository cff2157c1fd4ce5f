"""Smoke tests of every `encore` command of the song side, run as a user would."""

import subprocess
import sys

import pytest

from rl.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for command in ("catalog", "train-embedding", "neighbours", "demo"):
        assert command in out


def test_help_runs_as_a_process():
    result = subprocess.run(
        [sys.executable, "-m", "rl.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "Encore" in result.stdout


def test_catalog_prints_stats(capsys):
    assert main(["catalog"]) == 0
    out = capsys.readouterr().out
    assert "tracks (deduplicated on track_id): 28356" in out and "tempo" in out


def test_catalog_error_is_clear(tmp_path, capsys):
    assert main(["catalog", "--catalog", str(tmp_path / "x.parquet")]) == 2
    assert "x.parquet does not exist (--catalog)" in capsys.readouterr().err


def test_train_embedding_tiny_budget(tmp_path, capsys):
    out_dir = tmp_path / "emb"
    assert (
        main(["train-embedding", "--epochs", "1", "--hidden", "16", "8", "--out", str(out_dir)])
        == 0
    )
    out = capsys.readouterr().out
    assert "genre_coherence_latent" in out and (out_dir / "checkpoint.pt").exists()


def test_neighbours(trained_embedding, tmp_path, capsys):
    trained_embedding.save(str(tmp_path))
    code = main(["neighbours", "0sf12qNH5qcw8qpgymFOqD", "-k", "3", "--embedding", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Blinding Lights" in out and "  3. " in out


def test_neighbours_unknown_track(trained_embedding, tmp_path, capsys):
    trained_embedding.save(str(tmp_path))
    assert main(["neighbours", "nope", "--embedding", str(tmp_path)]) == 2
    assert "unknown track id 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["demo", "--help"], ["neighbours", "--help"]])
def test_subcommand_help(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
