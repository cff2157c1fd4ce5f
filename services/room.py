"""The listening room: a page at ``/`` where a person uses the recommender, and the
catalog search it needs (``GET /v1/tracks``).

Where it sits: an ``APIRouter`` included in the ingress's FastAPI app (services/ingress.py),
so the same replica that issues recommendations serves the page and searches the catalog it
recommends from (the embedding's tracks, so every search hit can be played). The page
(services/static/: plain HTML, JS and CSS, no build step, nothing fetched from outside)
calls only the public API: ``/v1/tracks`` to pick what is playing, ``/v1/recommend``,
``/v1/feedback`` for the "played through / skipped / liked" buttons, ``/v1/users/{id}``
for the listener's state when the app has it, and ``/v1/health`` polled every two seconds
so a promotion made in another shell (``encore promote VERSION``) shows within seconds.

The search itself (``CatalogSearch``) is plain Python over the catalog's names and artists:
no Ray, tested directly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The page's files (shipped as package data)."""
PAGE_ASSETS = {
    "room.js": "text/javascript; charset=utf-8",
    "room.css": "text/css; charset=utf-8",
}
"""The files the page loads besides index.html, with their media types; nothing else under
static/ is served (no path from the URL ever reaches the file system)."""
MAX_QUERY_LENGTH = 100
"""Longest search text accepted (characters)."""
MAX_PAGE_SIZE = 50
"""Most tracks one page of search results holds."""


class TrackHit(BaseModel):
    """One catalog track found by the search."""

    track_id: str
    track_name: str | None = Field(description="title (null when the catalog has none)")
    track_artist: str | None = Field(description="artist (null when the catalog has none)")


class TrackPage(BaseModel):
    """One page of search results, best match first."""

    query: str
    page: int = Field(description="1-based page number")
    page_size: int
    total: int = Field(description="tracks matching the query over all pages")
    tracks: list[TrackHit]


@dataclass(frozen=True)
class SearchResult:
    total: int
    rows: list[int]  # catalog rows of the requested page, best match first


class CatalogSearch:
    """Search catalog tracks by title and artist, case- and accent-insensitively enough
    for typing (``str.casefold``).

    A track matches when every word of the query appears in its "title artist" text.
    Ranking, best first: title starts with the whole query, title contains it, artist
    contains it, the words are spread over title and artist; ties keep the shorter
    title first (the song itself before its remixes), then catalog order.

    Parameters
    ----------
    track_ids, names, artists : row-aligned sequences; names/artists may hold None.
    """

    def __init__(self, track_ids: Any, names: Any, artists: Any) -> None:
        if not len(track_ids) == len(names) == len(artists):
            raise ValueError(
                f"track_ids, names and artists must be row-aligned, got lengths "
                f"{len(track_ids)}, {len(names)}, {len(artists)}"
            )
        self.track_ids = [str(t) for t in track_ids]
        self.names = [n if isinstance(n, str) else None for n in names]
        self.artists = [a if isinstance(a, str) else None for a in artists]
        self._folded_names = [(n or "").casefold() for n in self.names]
        self._folded_artists = [(a or "").casefold() for a in self.artists]
        # All "title NUL artist SOH" texts in one string: str.find scans it at C speed, so
        # a query costs one scan per occurrence of its longest word, not a Python loop over
        # every track (28k tracks: ~1 ms instead of ~30 ms).
        texts = [
            f"{n}\x00{a}\x01" for n, a in zip(self._folded_names, self._folded_artists, strict=True)
        ]
        self._text = "".join(texts)
        self._starts = np.cumsum([0] + [len(t) for t in texts[:-1]])  # (N,) offset of each row

    def _rows_containing(self, word: str) -> np.ndarray:
        """Rows whose title or artist contains ``word`` (sorted, unique)."""
        positions = []
        find = self._text.find
        at = find(word)
        while at != -1:
            positions.append(at)
            at = find(word, at + 1)
        return np.unique(np.searchsorted(self._starts, positions, side="right") - 1)

    def search(self, query: str, page: int = 1, page_size: int = 20) -> SearchResult:
        """The rows of ``page`` (1-based) of the tracks matching ``query``."""
        if page < 1 or page_size < 1:
            raise ValueError(f"page and page_size must be >= 1, got {page} and {page_size}")
        phrase = " ".join(query.casefold().replace("\x00", " ").replace("\x01", " ").split())
        words = phrase.split()
        if not words:
            raise ValueError("the query has no words")
        ranked: list[tuple[int, int, int]] = []  # (tier, title length, row)
        for row in self._rows_containing(max(words, key=len)).tolist():
            name, artist = self._folded_names[row], self._folded_artists[row]
            if name.startswith(phrase):
                tier = 0
            elif phrase in name:
                tier = 1
            elif phrase in artist:
                tier = 2
            elif all(word in name or word in artist for word in words):
                tier = 3
            else:
                continue
            ranked.append((tier, len(name), row))
        ranked.sort()
        start = (page - 1) * page_size
        return SearchResult(len(ranked), [row for *_, row in ranked[start : start + page_size]])

    def hit(self, row: int) -> TrackHit:
        return TrackHit(
            track_id=self.track_ids[row], track_name=self.names[row], track_artist=self.artists[row]
        )


_search_lock = threading.Lock()
_search_by_catalog: dict[int, tuple[Any, CatalogSearch]] = {}


def search_over(catalog: Any) -> CatalogSearch:
    """The (cached) search over a ``CatalogTable`` (services/core/request_pipeline.py):
    folding 28k names takes ~30 ms, so it is done once per catalog, not per request."""
    with _search_lock:
        cached = _search_by_catalog.get(id(catalog))
        if cached is None or cached[0] is not catalog:
            cached = (catalog, CatalogSearch(catalog.track_ids, catalog.names, catalog.artists))
            _search_by_catalog[id(catalog)] = cached
        return cached[1]


def serving_catalog_search() -> CatalogSearch:
    """The search over the catalog this replica recommends from.

    Inside Serve, the replica's servable object is the Ingress, whose pipeline holds the
    catalog (the embedding's tracks). An app built without Serve overrides this
    dependency (``app.dependency_overrides[serving_catalog_search] = ...``).
    """
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        ingress = serve.get_replica_context().servable_object
    except RayServeException:
        ingress = None
    pipeline = getattr(ingress, "pipeline", None)
    if pipeline is None:
        raise HTTPException(status_code=503, detail="the catalog is not loaded in this process")
    return search_over(pipeline.catalog)


room = APIRouter()


@room.get("/", include_in_schema=False)
async def listening_room() -> FileResponse:
    """The page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


@room.get("/room/{asset}", include_in_schema=False)
async def page_asset(asset: str) -> FileResponse:
    """The page's script and style sheet."""
    media_type = PAGE_ASSETS.get(asset)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no page asset {asset!r}")
    return FileResponse(STATIC_DIR / asset, media_type=media_type)


@room.get("/v1/tracks", response_model=TrackPage, responses={422: {}})
def search_tracks(
    search: Annotated[CatalogSearch, Depends(serving_catalog_search)],
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_QUERY_LENGTH,
            description="words of the title and/or artist, any case",
        ),
    ],
    page: Annotated[int, Query(ge=1, le=10_000, description="1-based page")] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
) -> TrackPage:
    """Search the catalog the service recommends from by title or artist (paged)."""
    # A plain def: FastAPI runs it in its thread pool, off the replica's event loop.
    if not q.split():
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "q"),
                    "msg": "the search needs at least one word of a title or artist",
                    "type": "value_error",
                }
            ]
        )
    result = search.search(q, page=page, page_size=page_size)
    return TrackPage(
        query=q,
        page=page,
        page_size=page_size,
        total=result.total,
        tracks=[search.hit(row) for row in result.rows],
    )
