"""Each history importer on fixtures written from the formats' documented layouts: the
good rows become plays (with sessions, skips, streams and catalog matches), malformed rows
are quarantined with their reason and never crash the import, podcasts are dropped, and
no identifying field (user names, IP addresses, platforms, countries) reaches the log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rl.feedback.importers.history import ImportConfig, detect_format, import_history
from rl.feedback.importers.matching import CatalogMatcher, spotify_id_of, track_key
from rl.feedback.log import read_organic_table, read_plays_table, read_quarantine

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "histories"
SHAPE_OF_YOU = "6f807x0ima9a1j3VPbc7VN"
HALO = "HALOHALOHALOHALOHALO22"
#: Identifying values planted in the fixtures; none may appear anywhere in a log.
IDENTIFYING = (
    "alice_w_private", "203.0.113.77", "android OS 14", "unknown-agent-xyz",
    "user_000001", "user_000002", "lb_private_alice", "lb_private_bob",
)  # fmt: skip


@pytest.fixture(scope="module")
def matcher() -> CatalogMatcher:
    return CatalogMatcher([SHAPE_OF_YOU, HALO], ["Ed Sheeran", "Beyoncé"], ["Shape of You", "Halo"])


def run_import(tmp_path, matcher, name, file_format="auto", **config):
    log = str(tmp_path / "log")
    summary = import_history(
        [str(FIXTURES / name)], log, file_format, ImportConfig(**config), matcher=matcher,
        progress=False,
    )  # fmt: skip
    plays = read_plays_table(log).to_pandas().sort_values(["user_id", "timestamp"])
    return log, summary, plays.reset_index(drop=True)


def log_text(log: str) -> str:
    """Everything a log holds, decoded: every parquet table's values and every text file."""
    parts = []
    for root, _, files in os.walk(log):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".parquet"):
                parts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
            else:
                parts.append(Path(path).read_text(encoding="utf-8"))
    return "\n".join(parts)


def assert_nothing_identifying(log: str) -> None:
    text = log_text(log)
    for value in IDENTIFYING:
        assert value not in text, value
    for field in ("ip_addr", "username", "conn_country", "platform", "user_agent"):
        assert field not in text, field


def quarantine_reasons(log: str) -> list[str]:
    return sorted(record["reason"] for record in read_quarantine(log))


def test_detect_format_by_name_and_content():
    assert (
        detect_format(str(FIXTURES / "Streaming_History_Audio_2024_0.json")) == "spotify-extended"
    )
    assert detect_format(str(FIXTURES / "StreamingHistory_music_0.json")) == "spotify"
    assert detect_format(str(FIXTURES / "lastfm-1k.tsv")) == "lastfm"
    assert detect_format(str(FIXTURES / "listens.jsonl")) == "listenbrainz"
    assert detect_format(str(FIXTURES / "mssd_training_fixture.csv")) == "mssd"


def test_matching_normalises_names_and_reads_spotify_ids(matcher):
    assert track_key("Beyoncé & Jay-Z", "Halo (feat. X) - Remastered 2011") == "beyonce|halo"
    assert track_key("Ed Sheeran", "") is None
    assert spotify_id_of("spotify:track:" + SHAPE_OF_YOU) == SHAPE_OF_YOU
    assert spotify_id_of(f"https://open.spotify.com/track/{SHAPE_OF_YOU}?si=1") == SHAPE_OF_YOU
    assert spotify_id_of("spotify:episode:short") is None


def test_spotify_extended(tmp_path, matcher):
    log, summary, plays = run_import(tmp_path, matcher, "Streaming_History_Audio_2024_0.json")
    assert summary["source_rows"] == 10 and len(plays) == 4
    assert summary["dropped"] == {"podcast episode": 1, "audiobook chapter": 1}
    assert quarantine_reasons(log) == [
        "ms_played missing or negative",
        "no track, episode or audiobook in the record",
        "record is not a JSON object",
        "ts missing or not an ISO time",
    ]
    assert plays["track_id"].tolist() == [
        SHAPE_OF_YOU,
        "0000000000000000000001",
        "0000000000000000000001",
        SHAPE_OF_YOU,
    ]
    assert plays["in_catalog"].tolist() == [True, False, False, True]
    # skipped as recorded; else from reason_end (fwdbtn / endplay are skips)
    assert plays["skipped"].tolist() == [False, True, True, True]
    assert plays["streamed"].tolist() == [True, False, True, True]
    assert plays["session_id"].nunique() == 2 and plays["position"].tolist() == [0, 1, 2, 0]
    assert plays["day"].tolist() == [0, 0, 0, 1]
    assert set(plays["user_id"]) == {"spotify:u000001"}
    assert (
        summary["catalog_match"]["by_spotify_id"] == 2
        and summary["catalog_match"]["unmatched"] == 2
    )
    organic = read_organic_table(log).to_pandas()
    assert organic["streams"].sum() == 3  # the streams (>= 30 s), summed per user-day-track
    assert_nothing_identifying(log)


def test_spotify_extended_can_drop_private_sessions(tmp_path, matcher):
    _, summary, plays = run_import(
        tmp_path, matcher, "Streaming_History_Audio_2024_0.json", drop_incognito=True
    )
    assert len(plays) == 3 and summary["dropped"]["private session (incognito)"] == 1


def test_spotify_basic(tmp_path, matcher):
    log, summary, plays = run_import(tmp_path, matcher, "StreamingHistory_music_0.json")
    assert len(plays) == 4 and summary["dropped"] == {"podcast episode": 1}
    assert quarantine_reasons(log) == [
        "endTime missing or not 'YYYY-MM-DD HH:MM'",
        "msPlayed missing or negative",
        "no artistName/trackName or podcast in the record",
    ]
    assert plays["track_id"].tolist()[:3] == [SHAPE_OF_YOU, HALO, HALO]  # by normalised name
    assert plays["track_id"].iloc[3].startswith("ext:")
    assert plays["skipped"].tolist() == [False, True, False, False]  # < 30 s is a skip
    assert plays["session_id"].nunique() == 3
    assert summary["catalog_match"]["by_artist_title"] == 3
    assert_nothing_identifying(log)


def test_lastfm_1k_and_lfm_1b_rows(tmp_path, matcher):
    log, summary, plays = run_import(tmp_path, matcher, "lastfm-1k.tsv")
    assert summary["source_rows"] == 8 and len(plays) == 5
    assert quarantine_reasons(log) == [
        "artist or track name is empty",
        "expected 6 (Last.fm-1K) or 5 (LFM-1b) tab-separated fields",
        "timestamp missing or unparseable",
    ]
    assert summary["users"] == 3 and plays["user_id"].str.startswith("lastfm:u").all()
    assert "lfm1b:123456" in set(plays["track_id"])
    assert (plays["track_id"] == SHAPE_OF_YOU).sum() == 2  # "(Live)" is a bracketed tag
    assert plays["skipped"].isna().all() and plays["ms_played"].isna().all()
    assert plays["streamed"].all()  # a scrobble is a stream
    assert summary["sessions"] == 4
    assert_nothing_identifying(log)


def test_listenbrainz_jsonl(tmp_path, matcher):
    log, summary, plays = run_import(tmp_path, matcher, "listens.jsonl")
    assert len(plays) == 3 and summary["users"] == 2
    assert quarantine_reasons(log) == [
        "artist_name or track_name missing",
        "line is not a JSON object (a listen)",
        "line is not a JSON object (a listen)",
        "listened_at missing or unparseable",
    ]
    assert summary["catalog_match"] == {
        "by_spotify_id": 1, "by_artist_title": 1, "unmatched": 1, "match_rate": 2 / 3,
    }  # fmt: skip
    assert_nothing_identifying(log)


def test_mssd_streamed_in_chunks(tmp_path, matcher, monkeypatch):
    from rl.feedback.importers import mssd

    monkeypatch.setattr(mssd, "MSSD_CHUNK_ROWS", 3)  # sessions cross chunk boundaries
    log, summary, plays = run_import(tmp_path, matcher, "mssd_training_fixture.csv")
    assert quarantine_reasons(log) == [
        "date missing or unparseable",
        "hour_of_day not in 0..23",
        "skip_1/skip_2/skip_3/not_skipped not boolean",
    ]
    assert len(plays) == 6 and summary["users"] == 3
    first = plays[plays["session_id"] == "0_a"].sort_values("position")
    assert first["position"].tolist() == [0, 1, 2, 3]
    assert first["skipped"].tolist() == [False, True, True, False]  # skip = skip_2
    assert first["streamed"].tolist() == [True, False, False, True]  # stream = level >= 2
    assert plays["day"].min() == 0 and plays["day"].max() == 2


def test_output_must_be_new(tmp_path, matcher):
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "something").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        run_import(tmp_path, matcher, "listens.jsonl")


def test_a_file_that_is_not_json_is_quarantined_not_fatal(tmp_path, matcher):
    broken = tmp_path / "endsong_0.json"
    broken.write_text("{ this is not json")
    log = str(tmp_path / "log")
    summary = import_history([str(broken)], log, matcher=matcher, progress=False)
    assert summary["plays_written"] == 0 and summary["quarantined"] == 1
    assert quarantine_reasons(log)[0].startswith("file is not valid JSON")
