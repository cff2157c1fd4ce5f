"""The listening room's server side: the catalog search (checked against a brute-force
reference on the real catalog) and the router's answers (page, assets, ``/v1/tracks`` and
its 422s) through a FastAPI app with the room router and the real catalog.

The same router inside the real Serve app is exercised by tests/services/test_room_browser.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.room import (
    MAX_PAGE_SIZE,
    MAX_QUERY_LENGTH,
    STATIC_DIR,
    CatalogSearch,
    room,
    search_over,
    serving_catalog_search,
)


@pytest.fixture(scope="module")
def catalog_search(real_catalog) -> CatalogSearch:
    metadata = real_catalog.metadata
    return CatalogSearch(metadata.index, metadata["track_name"], metadata["track_artist"])


@pytest.fixture(scope="module")
def client(catalog_search):
    app = FastAPI()
    app.include_router(room)
    app.dependency_overrides[serving_catalog_search] = lambda: catalog_search
    with TestClient(app) as test_client:
        yield test_client


def brute_force_matches(search: CatalogSearch, query: str) -> set[int]:
    """Rows whose title or artist holds every word of the query, checked one by one."""
    words = query.lower().split()
    rows = set()
    for row in range(len(search.track_ids)):
        text = f"{search.names[row] or ''} {search.artists[row] or ''}".lower()
        if (search.names[row] or search.artists[row]) and all(w in text for w in words):
            rows.add(row)
    return rows


@pytest.mark.parametrize("query", ["love", "Taylor Swift", "the weeknd", "remix dance", "zzqx"])
def test_search_finds_exactly_the_tracks_holding_every_word(catalog_search, query):
    expected = brute_force_matches(catalog_search, query)
    first = catalog_search.search(query, page=1, page_size=50)
    assert first.total == len(expected)
    everything = catalog_search.search(query, page=1, page_size=max(1, len(expected)))
    assert set(everything.rows) == expected
    assert everything.rows[:50] == first.rows


def test_search_ranks_titles_before_artists_and_pages_without_overlap(catalog_search):
    query = "love"
    result = catalog_search.search(query, page=1, page_size=10_000)
    names = [(catalog_search.names[r] or "").casefold() for r in result.rows]
    tiers = [
        0 if n.startswith(query) else 1 if query in n else 2 if query in artist else 3
        for n, artist in zip(
            names, [(catalog_search.artists[r] or "").casefold() for r in result.rows], strict=True
        )
    ]
    assert tiers == sorted(tiers) and tiers[0] == 0
    pages = [catalog_search.search(query, page=p, page_size=7).rows for p in (1, 2, 3)]
    assert pages[0] + pages[1] + pages[2] == result.rows[:21]
    beyond = catalog_search.search(query, page=10_000, page_size=7)
    assert beyond.rows == [] and beyond.total == result.total


def test_search_is_case_and_space_insensitive_and_refuses_bad_arguments(catalog_search):
    assert (
        catalog_search.search("  TAYLOR   swift ").rows
        == catalog_search.search("taylor swift").rows
    )
    with pytest.raises(ValueError, match="no words"):
        catalog_search.search("   ")
    with pytest.raises(ValueError, match="page"):
        catalog_search.search("love", page=0)
    with pytest.raises(ValueError, match="row-aligned"):
        CatalogSearch(["a", "b"], ["x"], ["y", "z"])


def test_tracks_without_name_or_artist_are_never_hits():
    search = CatalogSearch(["a", "b", "c"], ["Song", None, float("nan")], ["Band", None, "Song"])
    assert search.search("song", page_size=10).rows == [0, 2]


def test_search_over_a_catalog_table_is_built_once(small_catalog):
    from services.core.request_pipeline import CatalogTable

    metadata = small_catalog.metadata
    table = CatalogTable.from_embedding(
        np.asarray(metadata.index), np.zeros((len(metadata), 5), np.float32), metadata
    )
    assert search_over(table) is search_over(table)
    hit = search_over(table).search(str(metadata["track_artist"].iloc[0])).rows[0]
    assert table.track_ids[hit] in set(metadata.index)


# -- the router -----------------------------------------------------------------------------
def test_tracks_endpoint_pages_results(client, catalog_search):
    body = client.get("/v1/tracks", params={"q": "love", "page": 2, "page_size": 5}).json()
    expected = catalog_search.search("love", page=2, page_size=5)
    assert body["total"] == expected.total and body["page"] == 2 and body["page_size"] == 5
    assert [t["track_id"] for t in body["tracks"]] == [
        catalog_search.track_ids[r] for r in expected.rows
    ]
    assert all("love" in (t["track_name"] + t["track_artist"]).lower() for t in body["tracks"])


@pytest.mark.parametrize(
    "params, field",
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * (MAX_QUERY_LENGTH + 1)}, "q"),
        ({"q": "love", "page": 0}, "page"),
        ({"q": "love", "page": "two"}, "page"),
        ({"q": "love", "page_size": MAX_PAGE_SIZE + 1}, "page_size"),
        ({"q": "love", "page_size": 0}, "page_size"),
    ],
)
def test_bad_queries_get_422_naming_the_parameter(client, params, field):
    response = client.get("/v1/tracks", params=params)
    assert response.status_code == 422, response.text
    assert field in str(response.json()["detail"])


def test_the_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/room/[^"]+)"', page.text)
    assert sorted(assets) == ["/room/room.css", "/room/room.js"]
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 1000
    assert client.get("/room/room.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/room/../room.py").status_code == 404
    assert client.get("/room/index.html").status_code == 404


def test_the_page_loads_nothing_from_outside():
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), path


def test_every_endpoint_the_page_calls_is_served_by_the_ingress():
    """The page's API calls, read from its script, against the real ingress app's routes."""
    from services.ingress import api

    script = (STATIC_DIR / "room.js").read_text()
    called = set(re.findall(r'"(/v1/[a-z/]+)', script)) | set(re.findall(r"`(/v1/[a-z]+)", script))
    served = set(api.openapi()["paths"])
    assert {"/v1/tracks", "/v1/recommend", "/v1/feedback", "/v1/health"} <= called
    missing = {path for path in called if not any(s.startswith(path) for s in served)}
    # GET /v1/users/{id} is optional: the page falls back to its own session summary.
    assert missing <= {"/v1/users"}, missing
