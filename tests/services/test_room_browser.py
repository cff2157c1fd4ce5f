"""The listening room in a real browser: the OS's headless Chromium, driven by Selenium,
against the real Serve app (Ray, the Ingress/Scorer deployments, a registry of real RLlib
modules). One person's visit, in order: load the page, search the catalog, play a track,
see the recommendations, answer the pick with "played through", "skipped" and "liked"
(real feedback: the server's counters move), watch a promotion made with the real
``encore promote`` command in another process show up, then use the page at phone size.

Set ``ENCORE_ROOM_SCREENSHOT=docs/listening-room.png`` to (re)take the README's screenshot.
Skipped when chromium/chromedriver are missing (``make install`` installs them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.ray

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 20.0


@pytest.fixture(scope="module")
def served(small_embedding_uri, tmp_path_factory):
    from rl.decision.observation import ObservationLayout
    from rl.registry import ModelRegistry
    from services.app import start_app
    from tests.services.conftest import (
        app_config,
        free_port,
        register_module_version,
        serve_on_local_ray,
    )

    work = tmp_path_factory.mktemp("room")
    registry = ModelRegistry(str(work / "registry"))
    version = register_module_version(registry, ObservationLayout(), str(work), seed=1)
    config = app_config(work, small_embedding_uri, registry.uri, poll_interval_s=0.25)
    with serve_on_local_ray(fast_path=True):
        urls = start_app(config, http_port=free_port(), grpc_port=free_port())
        yield {"url": urls["http_direct"], "registry": registry, "version": version}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium/chromedriver not installed (make install installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition, what: str, timeout: float = WAIT_S):
    """Poll ``condition()`` until it is truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the DOM is being re-rendered under us: try again
            last_error = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} ({last_error})")


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def pick_label(driver) -> str:
    return text(driver, "pick")


def contrast(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two CSS rgb()/rgba() colours."""

    def luminance(css: str) -> float:
        r, g, b = (int(v) / 255 for v in re.findall(r"[\d.]+", css)[:3])
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_a_visit_to_the_listening_room(served, browser, tmp_path):
    import httpx

    driver = browser
    url = served["url"]
    # The API behind the search box, on the real app.
    found = httpx.get(f"{url}/v1/tracks", params={"q": "love", "page_size": 3}).json()
    assert found["total"] > 0 and len(found["tracks"]) == 3
    assert httpx.get(f"{url}/v1/tracks", params={"q": "  "}).status_code == 422
    title = found["tracks"][0]["track_name"]

    # Load: the page shows the version being served (no production version yet: logging).
    driver.get(f"{url}/")
    assert driver.title == "Encore listening room"
    wait_for(lambda: text(driver, "serving-version") == "logging", "the serving version")

    # Search, then play the first hit.
    box = driver.find_element("id", "search-input")
    box.send_keys(title)
    driver.find_element("id", "search-button").click()
    wait_for(lambda: driver.find_elements("css selector", "#search-results .play"), "results")
    assert "match" in text(driver, "search-summary")
    first_hit = driver.find_element("css selector", "#search-results li")
    assert title.lower() in first_hit.text.lower()
    first_hit.find_element("css selector", ".play").click()

    # Recommend: four candidates with the policy's probabilities, the pick marked.
    wait_for(lambda: len(driver.find_elements("css selector", "#recommendations li")) == 4, "recs")
    assert title in text(driver, "now-playing")
    cards = driver.find_elements("css selector", "#recommendations li")
    assert len(driver.find_elements("css selector", "#recommendations li.pick-row")) == 1
    assert all("probability" in card.text for card in cards)
    probabilities = [
        float(re.search(r"probability\n([\d.]+)", card.text).group(1)) for card in cards
    ]
    assert sum(probabilities) == pytest.approx(1.0, abs=0.01)
    assert "answered by logging" in text(driver, "answered-by")
    assert "arm" in text(driver, "answered-by")

    # The three buttons: each sends feedback, the pick becomes what is playing, and the
    # next recommendation follows from it.
    before = httpx.get(f"{url}/v1/health").json()["feedback"]
    for answered, (button, label) in enumerate(
        (("btn-played", "played-through"), ("btn-skipped", "skipped"), ("btn-liked", "liked")),
        start=1,
    ):
        pick = pick_label(driver)
        driver.find_element("id", button).click()
        wait_for(
            lambda n=answered: len(driver.find_elements("css selector", "#history li")) == n,
            f"the {label} feedback in the history",
        )
        newest = driver.find_element("css selector", "#history li")
        assert newest.get_attribute("class") == f"history-{label}" and pick in newest.text
        wait_for(lambda pick=pick: text(driver, "now-playing") == pick, "the pick to play")
        wait_for(lambda: not driver.find_element("id", "btn-played").get_attribute("disabled"), "")
    history = driver.find_elements("css selector", "#history li")
    assert [h.get_attribute("class") for h in history] == [
        "history-liked",
        "history-skipped",
        "history-played-through",
    ]
    rewards = [float(re.search(r"reward (-?[\d.]+)", h.text).group(1)) for h in history]
    assert rewards[0] > rewards[2] > rewards[1]  # liked > played through > skipped
    after = httpx.get(f"{url}/v1/health").json()["feedback"]
    assert after["acknowledged_rows"] - before["acknowledged_rows"] == 3, (before, after)
    # The listener's state (GET /v1/users/{id}): the two songs heard to the end are
    # counted as listens and have relationship states, which grow after today.
    wait_for(lambda: text(driver, "listener-listens") == "2", "two listens counted")
    relationships = driver.find_elements("css selector", "#relationships li")
    assert len(relationships) == 2
    for row in relationships:
        now, after_today, last = (
            row.find_element("class name", name).text
            for name in ("rel-now", "rel-next", "rel-last")
        )
        assert last == "last listened today" and now.split() != after_today.split()
        assert all(float(v) > 0 for v in after_today.split()), after_today

    # A promotion in another process (the real CLI) shows up within seconds.
    promoted = subprocess.run(
        [sys.executable, "-m", "rl.cli", "promote", served["version"], "--registry", served["registry"].uri],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert promoted.returncode == 0, promoted.stderr
    promoted_at = time.monotonic()
    wait_for(
        lambda: text(driver, "serving-version") == served["version"], "the promoted version", 15
    )
    seen_after_s = time.monotonic() - promoted_at
    assert served["version"] in text(driver, "promotion")
    assert "stale" in driver.find_element("id", "answered-by").get_attribute("class")
    driver.find_element("id", "ask-again").click()
    wait_for(
        lambda: f"answered by {served['version']}" in text(driver, "answered-by"), "new answer"
    )
    print(f"promotion visible on the page {seen_after_s:.1f} s after `encore promote` returned")
    assert seen_after_s < 10

    # Readable: body text, muted text and the buttons keep WCAG AA contrast.
    colours = driver.execute_script(
        """
        const c = (sel, prop) => getComputedStyle(document.querySelector(sel))[prop];
        return [[c('.now-playing', 'color'), c('.panel', 'backgroundColor')],
                [c('#answered-by', 'color'), c('.up-next', 'backgroundColor')],
                [c('#btn-played', 'color'), c('#btn-played', 'backgroundColor')],
                [c('#btn-liked', 'color'), c('#btn-liked', 'backgroundColor')],
                [c('#search-summary', 'color'), c('.panel', 'backgroundColor')]];
        """
    )
    for foreground, background in colours:
        assert contrast(foreground, background) >= 4.5, (foreground, background)

    screenshot = os.environ.get("ENCORE_ROOM_SCREENSHOT")
    if screenshot:
        driver.set_window_size(1280, 1000)
        time.sleep(0.3)
        assert driver.save_screenshot(screenshot)

    # Phone-sized: one column, nothing wider than the screen, the buttons still reachable.
    driver.set_window_size(390, 844)
    wait_for(
        lambda: driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        ),
        "no horizontal scrolling at 390 px",
        5,
    )
    liked = driver.find_element("id", "btn-liked")
    assert liked.is_displayed() and liked.size["width"] >= 60
    pick = pick_label(driver)
    driver.execute_script("arguments[0].scrollIntoView()", liked)
    liked.click()
    wait_for(lambda: text(driver, "now-playing") == pick, "the pick to play at phone size")
    assert driver.save_screenshot(str(tmp_path / "phone.png"))
