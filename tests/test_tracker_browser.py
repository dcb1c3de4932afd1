"""footfall.js in a real browser (Debian's chromium, driven by Playwright)
against a real ``footfall serve``, checked by what the store then holds.

The test page is served from another origin (its own port) than the
collector, as on a real site, so every send crosses origins; the demo shop is
served by the collector itself (``--demo-site``), so it covers the same-origin
case. Each test gets a fresh browser context: its own storage, its own
anonymous id, by which its events are found.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from footfall import __version__
from footfall.tracker import tracker_script

from .live import LiveServer, running

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = bool(os.environ.get("FOOTFALL_REQUIRE_CHROMIUM"))  # set by .ci/run: skipping is not an option there

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not REQUIRED,
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium); CI installs it",
)

Row = dict[str, Any]
COLUMNS = (
    "event_id", "type", "event", "user_id", "properties", "path", "url", "title", "referrer",
    "library", "x", "y", "viewport_width", "viewport_height",
)

TEST_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Tracker test</title>
<link rel="icon" href="data:,">
<style>
  body { margin: 0; font: 16px sans-serif; }
  #hero { height: 300px; background: #eef; }
  #hover-target { width: 240px; height: 80px; margin: 20px; background: #fee; }
  .spacer { height: 2600px; }
  #footer { height: 400px; background: #efe; }
</style>
<script src="__COLLECTOR__/static/footfall.js"></script>
<script>
  footfall.init("__WRITE_KEY__", Object.assign({ host: "__COLLECTOR__", flushInterval: 200 }, window.FF_OPTIONS || {}));
</script>
</head>
<body>
<section id="hero" data-ff-section="hero">
  <nav><a id="to-b" href="/b" data-ff="to-b">Go to B</a> <a id="to-c" href="/c">Go to C</a></nav>
  <button id="buy" data-ff="buy-button">Buy <span data-ff-ignore>hidden-label-5521</span> now</button>
  <button id="like" data-ff="like">Like</button>
  <div id="plain">Not a link</div>
</section>
<div id="hover-target" data-ff-hover="promo">Hover me</div>
<form id="signup" action="/signup" method="post" data-ff="signup">
  <input id="email" name="email" type="email">
  <input id="password" name="password" type="password">
  <textarea id="note" name="note"></textarea>
  <button id="submit" type="submit">Sign up</button>
</form>
<div id="private" data-ff-ignore><button id="private-button" data-ff="private">Private area</button></div>
<div class="spacer"></div>
<section id="footer" data-ff-section="footer">Footer</section>
<script>
  // A tiny single-page app: links change the view with history.pushState.
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a");
    if (!link) return;
    event.preventDefault();
    history.pushState({}, "", link.getAttribute("href"));
    document.title = "Page " + link.getAttribute("href");
  });
  document.getElementById("signup").addEventListener("submit", (event) => event.preventDefault());
</script>
</body>
</html>
"""

# Makes the page believe it was hidden or shown (headless pages are always visible).
SET_VISIBILITY = """state => {
  Object.defineProperty(document, "visibilityState", { value: state, configurable: true });
  Object.defineProperty(document, "hidden", { value: state === "hidden", configurable: true });
  document.dispatchEvent(new Event("visibilitychange"));
}"""

# Counts the page's fetch calls to the collector, to tell them from beacons.
COUNT_FETCHES = """
window.__fetches = 0;
const originalFetch = window.fetch;
window.fetch = function (url, ...rest) {
  if (String(url).includes("/v1/batch")) window.__fetches += 1;
  return originalFetch.call(this, url, ...rest);
};
"""

# Times each of the page's fetch calls to the collector on the page's own clock:
# when it was made and when its answer (or failure) came back.
TIME_FETCHES = """
window.__sends = [];
const originalFetch = window.fetch;
window.fetch = function (url, ...rest) {
  if (!String(url).includes("/v1/batch")) return originalFetch.call(this, url, ...rest);
  const send = { start: performance.now(), end: null };
  window.__sends.push(send);
  return originalFetch.call(this, url, ...rest).finally(() => { send.end = performance.now(); });
};
"""

# What the page keeps in localStorage for sending later (its offline queue).
QUEUED = """() => Object.keys(localStorage).filter(key => key.startsWith("ff_q_"))
  .flatMap(key => JSON.parse(localStorage.getItem(key)))"""

# Scrolls to y, then waits for the tracker's measurement (100 ms after a scroll event).
SCROLL_TO = """y => new Promise(done => {
  const before = scrollY;
  const measured = () => setTimeout(done, 150);
  addEventListener("scroll", measured, { once: true });
  scrollTo(0, y);
  if (scrollY === before) { removeEventListener("scroll", measured); done(); }
})"""


class PageSite:
    """The test page on its own port: another origin than the collector. Every path
    serves the same page (it is a single-page app)."""

    def __init__(self, collector: str, write_key: str) -> None:
        page = TEST_PAGE.replace("__COLLECTOR__", collector).replace("__WRITE_KEY__", write_key).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("tracker-server"), demo_site=True) as live:
        yield live


@pytest.fixture(scope="module")
def site(server: LiveServer) -> Iterator[PageSite]:
    test_site = PageSite(server.url, server.write_key)
    yield test_site
    test_site.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("FOOTFALL_REQUIRE_CHROMIUM is set but /usr/bin/chromium is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    fresh = browser.new_context(viewport={"width": 1280, "height": 720})
    yield fresh
    fresh.close()


def open_page(context: BrowserContext, url: str, **options: Any) -> Page:
    """A page with the tracker initialised with ``options`` on top of the test page's."""
    page = context.new_page()
    page.add_init_script(f"window.FF_OPTIONS = {json.dumps(options)};")
    page.goto(url)
    page.wait_for_function("window.footfall && footfall.anonymousId()")
    return page


def stored(
    server: LiveServer, anonymous_id: str, until: Callable[[list[Row]], bool], timeout: float = 15.0
) -> list[Row]:
    """The events of one anonymous id in time order, once ``until`` holds for them."""
    query = (
        f"SELECT {', '.join(COLUMNS)} FROM events WHERE anonymous_id = '{anonymous_id}'"
        " ORDER BY timestamp, received_at"
    )
    deadline = time.monotonic() + timeout
    while True:
        rows = [dict(zip(COLUMNS, row, strict=True)) for row in server.sql(query)]
        for row in rows:
            row["properties"] = json.loads(row["properties"])
        if until(rows):
            return rows
        if time.monotonic() > deadline:
            summary = [(row["event"], row["path"], row["properties"]) for row in rows]
            raise AssertionError(f"the store never held what was expected; it holds {summary}")
        time.sleep(0.1)


def named(rows: list[Row], event: str) -> list[Row]:
    return [row for row in rows if row["event"] == event]


def has(event: str, count: int = 1) -> Callable[[list[Row]], bool]:
    return lambda rows: len(named(rows, event)) >= count


def page_box(page: Page, selector: str) -> dict[str, float]:
    """An element's box in page coordinates (independent of scrolling)."""
    box: dict[str, float] = page.eval_on_selector(
        selector,
        "e => { const r = e.getBoundingClientRect();"
        " return {left: r.left + scrollX, top: r.top + scrollY, width: r.width, height: r.height,"
        " border_left: e.clientLeft, border_top: e.clientTop}; }",
    )
    return box


def batch_requests(page: Page) -> list[str]:
    """The URLs of the page's requests to the collector's batch endpoint, as they happen."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url) if "/v1/batch" in request.url else None)
    return seen



def queued(page: Page) -> list[dict[str, Any]]:
    """The messages the page keeps in localStorage until they are sent."""
    messages: list[dict[str, Any]] = page.evaluate(QUEUED)
    return messages


def sent_once_queue_is_empty(page: Page) -> None:
    """Waits until the tracker has sent everything (its queue leaves localStorage)."""
    page.wait_for_function(f"({QUEUED})().length === 0", timeout=15_000)


def scroll_to(page: Page, y: float) -> None:
    page.evaluate(SCROLL_TO, y)


def message_ids(body: dict[str, Any]) -> list[str]:
    return [message["messageId"] for message in body["batch"]]

# -- the script itself ----------------------------------------------------------------


def test_the_script_is_served_gzipped_cached_and_within_budget(server: LiveServer) -> None:
    request = urllib.request.Request(f"{server.url}/static/footfall.js", headers={"Accept-Encoding": "gzip, br"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
        headers = response.headers
    assert headers["Content-Type"].startswith("text/javascript")
    assert headers["Content-Encoding"] == "gzip"
    assert "max-age" in headers["Cache-Control"]
    assert "Accept-Encoding" in headers["Vary"]
    assert gzip.decompress(body) == tracker_script()
    assert len(body) < 8 * 1024, f"footfall.js is {len(body):,} bytes gzipped; the budget is 8 KB"

    again = urllib.request.Request(
        f"{server.url}/static/footfall.js", headers={"Accept-Encoding": "gzip", "If-None-Match": headers["ETag"]}
    )
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(again, timeout=10)
    assert not_modified.value.code == 304
    not_modified.value.close()

    with urllib.request.urlopen(f"{server.url}/static/footfall.js", timeout=10) as plain:
        assert plain.headers["Content-Encoding"] is None
        assert plain.read() == tracker_script()


# -- automatic events, across origins -----------------------------------------------


def test_page_view_scroll_depth_and_a_click_with_its_coordinates(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_timeout(300)
    # Left of the middle: the label's data-ff-ignore part is ignored, clicks on it too.
    page.click("#buy", position={"x": 6, "y": 10})
    box = page_box(page, "#buy")
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, lambda rows: has("click")(rows) and len(named(rows, "scroll")) == 4)
    (view,) = named(rows, "page_view")
    assert view["type"] == "page"
    assert (view["path"], view["title"], view["url"]) == ("/", "Tracker test", site.url + "/")
    assert view["properties"] == {"signal": "passive"}
    assert view["library"] == f"footfall.js/{__version__}"
    assert sorted(row["properties"]["depth"] for row in named(rows, "scroll")) == [25, 50, 75, 100]
    assert {row["properties"]["signal"] for row in named(rows, "scroll")} == {"passive"}

    (click,) = named(rows, "click")
    properties = click["properties"]
    assert properties["signal"] == "active"
    assert (properties["element"], properties["tag"], properties["selector"]) == ("buy-button", "button", "#buy")
    assert properties["text"] == "Buy now"  # the data-ff-ignore part of the label is left out
    # Page coordinates of where Playwright clicked (relative to the padding box), whatever the scroll.
    assert abs(click["x"] - (box["left"] + box["border_left"] + 6)) <= 1
    assert abs(click["y"] - (box["top"] + box["border_top"] + 10)) <= 1
    assert (click["viewport_width"], click["viewport_height"]) == (1280, 720)
    page_height = page.evaluate("document.documentElement.scrollHeight")
    assert (properties["page_width"], properties["page_height"]) == (1280, page_height)
    assert (properties["x"], properties["y"]) == (click["x"], click["y"])


def test_a_link_click_carries_its_absolute_href(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    page.click("#to-b")  # href="/b", named by data-ff
    page.wait_for_function("location.pathname === '/b'")
    page.click("#to-c")  # href="/c", no data-ff: named by its selector
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, has("click", 2))
    clicks = [(row["path"], row["properties"]) for row in named(rows, "click")]
    assert [(path, {key: properties[key] for key in ("element", "tag", "selector", "text", "href")}) for path, properties in clicks] == [
        ("/", {"element": "to-b", "tag": "a", "selector": "#to-b", "text": "Go to B", "href": site.url + "/b"}),
        ("/b", {"element": "#to-c", "tag": "a", "selector": "#to-c", "text": "Go to C", "href": site.url + "/c"}),
    ]
    assert {properties["signal"] for _, properties in clicks} == {"active"}


def test_page_leave_after_scrolling_to_the_bottom_reports_max_scroll_100(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    scroll_to(page, page.evaluate("document.documentElement.scrollHeight"))
    page.close()  # page_leave goes by beacon

    rows = stored(server, anonymous_id, lambda rows: has("page_leave")(rows) and has("scroll", 4)(rows))
    assert sorted(row["properties"]["depth"] for row in named(rows, "scroll")) == [25, 50, 75, 100]
    (leave,) = named(rows, "page_leave")
    assert (leave["path"], leave["properties"]["max_scroll"]) == ("/", 100)


def test_page_leave_reports_the_deepest_scroll_not_the_last(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    height, viewport = page.evaluate("[document.documentElement.scrollHeight, innerHeight]")
    scroll_to(page, round(height * 0.62) - viewport)  # the bottom of the screen at 62 % of the page
    deepest = page.evaluate("Math.ceil((scrollY + innerHeight) / document.documentElement.scrollHeight * 100)")
    scroll_to(page, 0)  # back to the top before leaving
    page.evaluate("history.pushState({}, '', '/next')")
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, has("page_leave"))
    assert 50 <= deepest < 75
    assert sorted(row["properties"]["depth"] for row in named(rows, "scroll")) == [25, 50]
    (leave,) = named(rows, "page_leave")
    assert (leave["path"], leave["properties"]["max_scroll"]) == ("/", deepest)


def test_a_scroll_just_before_leaving_still_counts(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    """Scroll events are measured on a timer; leaving measures once more, so
    a scroll to the bottom in the same instant as the route change counts."""
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    page.evaluate("scrollTo(0, document.documentElement.scrollHeight); history.pushState({}, '', '/next')")
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, has("page_leave"))
    (leave,) = named(rows, "page_leave")
    assert (leave["path"], leave["properties"]["max_scroll"]) == ("/", 100)
    assert sorted(row["properties"]["depth"] for row in named(rows, "scroll") if row["path"] == "/") == [25, 50, 75, 100]


def test_single_page_app_history_changes_are_page_views(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    page.wait_for_timeout(400)
    page.click("#to-b")  # pushState
    page.wait_for_timeout(100)
    page.evaluate("history.replaceState({}, '', '/b')")  # same address: not a new page
    page.go_back()  # popstate, back to /
    page.wait_for_timeout(100)
    page.evaluate("history.replaceState({}, '', '/c?tab=2')")
    page.wait_for_timeout(100)
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, has("page_view", 4))
    views = named(rows, "page_view")
    assert [(row["path"], row["url"]) for row in views] == [
        ("/", site.url + "/"), ("/b", site.url + "/b"), ("/", site.url + "/"), ("/c", site.url + "/c?tab=2"),
    ]
    assert views[1]["title"] == "Page /b"  # read after the app changed it
    assert views[1]["referrer"] == site.url + "/"  # the page it came from
    leaves = named(rows, "page_leave")
    assert [row["path"] for row in leaves] == ["/", "/b", "/"]
    assert 300 <= leaves[0]["properties"]["dwell_ms"] <= 2000


def test_hover_duration_and_section_visibility(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    page.hover("#hover-target")
    page.wait_for_timeout(700)
    page.mouse.move(1200, 700)  # away from it
    page.wait_for_timeout(300)
    started = time.monotonic()
    page.evaluate("document.getElementById('footer').scrollIntoView()")  # the hero leaves the screen
    page.wait_for_timeout(1000)
    page.evaluate("history.pushState({}, '', '/next')")  # leaving the page reports its sections
    footer_ms = (time.monotonic() - started) * 1000
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, has("section_view", 2))
    (hover,) = named(rows, "hover")
    assert hover["properties"]["element"] == "promo"
    assert hover["properties"]["signal"] == "passive"
    assert 600 <= hover["properties"]["duration_ms"] <= 1300
    sections = {row["properties"]["section"]: row["properties"] for row in named(rows, "section_view")}
    assert set(sections) == {"hero", "footer"}
    assert 900 <= sections["hero"]["visible_ms"] <= 2500  # from load until scrolled away
    assert abs(sections["footer"]["visible_ms"] - footer_ms) <= 400
    assert {properties["signal"] for properties in sections.values()} == {"passive"}


def test_rage_clicks(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    page.click("#plain", click_count=4)  # four clicks in well under a second, on one spot
    page.wait_for_timeout(1100)  # a burst ends a second after its last click
    page.dblclick("#like")  # two clicks: impatience, not rage
    page.wait_for_timeout(1100)
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, lambda rows: has("rage_click")(rows) and has("click", 2)(rows))
    (rage,) = named(rows, "rage_click")
    assert rage["properties"]["clicks"] == 4
    assert rage["properties"]["selector"] == "#plain"
    assert rage["properties"]["signal"] == "active"
    box = page_box(page, "#plain")
    assert box["left"] <= rage["x"] <= box["left"] + box["width"]
    assert [row["properties"]["element"] for row in named(rows, "click")] == ["like", "like"]


def test_rage_clicks_need_three_clicks_within_a_second_and_30_px(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    box = page_box(page, "#plain")  # the page is not scrolled: page and viewport coordinates agree
    y = box["top"] + box["height"] / 2
    # Three quick clicks 20 px apart: each near the one before, but the first
    # and the last 40 px apart. Not rage.
    for x in (400, 420, 440):
        page.mouse.click(x, y)
    # Three clicks on one spot, 600 ms apart: never three within a second. Not rage.
    page.mouse.click(800, y)
    page.wait_for_timeout(600)
    page.mouse.click(800, y)
    page.wait_for_timeout(600)
    page.mouse.click(800, y)
    # Three quick clicks, the first and the last exactly 30 px apart: rage.
    for x in (100, 115, 130):
        page.mouse.click(x, y)
    page.evaluate("history.pushState({}, '', '/next')")  # leaving ends the burst at once
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, lambda rows: has("rage_click")(rows) and has("page_leave")(rows))
    (rage,) = named(rows, "rage_click")
    assert (rage["properties"]["clicks"], rage["properties"]["selector"]) == (3, "#plain")
    assert (rage["x"], round(rage["y"])) == (130, round(y))  # where the third click made it rage


def test_a_burst_elsewhere_is_a_rage_click_of_its_own(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    """Two bursts far apart, the second begun within a second of the first:
    two rage clicks, each where its own third click was, not one of six clicks."""
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    box = page_box(page, "#plain")
    y = box["top"] + box["height"] / 2
    for x in (100, 105, 110):
        page.mouse.click(x, y)
    for x in (600, 605, 610):
        page.mouse.click(x, y)
    page.evaluate("history.pushState({}, '', '/next')")  # leaving ends the second burst
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, lambda rows: len(named(rows, "rage_click")) >= 2 and has("page_leave")(rows))
    bursts = sorted((row["x"], row["properties"]["clicks"]) for row in named(rows, "rage_click"))
    assert bursts == [(110, 3), (610, 3)]


def test_form_submits_never_carry_what_was_typed(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    secrets = ("secret-mail-7731@example.com", "hunter2-secret-pw", "secret-note-4410")
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    page.fill("#email", secrets[0])
    page.fill("#password", secrets[1])
    page.fill("#note", secrets[2])
    page.click("#password")
    page.click("#submit")
    page.click("#private-button")  # inside data-ff-ignore
    page.click("#private-button", click_count=3)
    page.wait_for_timeout(1200)
    queued = page.evaluate("JSON.stringify(localStorage)")
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, has("form_submit"))
    (submit,) = named(rows, "form_submit")
    assert submit["properties"] == {
        "signal": "active", "form": "signup", "selector": "#signup", "action": "/signup", "method": "post", "fields": 3,
    }
    clicked = [row["properties"]["element"] for row in named(rows, "click")]
    assert clicked == ["#submit"]  # not the password field, nothing in the ignored area
    assert not named(rows, "rage_click")
    everything = json.dumps(server.sql(f"SELECT * FROM events WHERE anonymous_id = '{anonymous_id}'"))
    everything += json.dumps(server.sql("SELECT * FROM dead_letters"))
    for secret in (*secrets, "hidden-label-5521", "Private area"):
        assert secret not in everything
        assert secret not in queued


# -- delivery: offline, retries, the last beacon -------------------------------------


def test_events_queued_offline_arrive_once_back_online(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    stored(server, anonymous_id, has("page_view"))
    context.set_offline(True)
    for number in range(5):
        page.evaluate(f"footfall.track('offline_event', {{number: {number}}})")
    page.wait_for_timeout(800)  # sends fail and back off
    assert "offline_event" in page.evaluate("JSON.stringify(localStorage)")
    context.set_offline(False)  # "online": sent at once

    rows = stored(server, anonymous_id, has("offline_event", 5))
    page.wait_for_timeout(500)
    rows = stored(server, anonymous_id, has("offline_event", 5))
    events = named(rows, "offline_event")
    assert sorted(row["properties"]["number"] for row in events) == [0, 1, 2, 3, 4]
    assert len({row["event_id"] for row in rows}) == len(rows)
    assert {row["properties"]["signal"] for row in events} == {"active"}  # track adds it unless given


def test_offline_the_queue_keeps_only_the_newest_max_queue_events(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/", maxQueue=3)
    anonymous_id = page.evaluate("footfall.anonymousId()")
    sent_once_queue_is_empty(page)  # the page view is out of the way
    context.set_offline(True)
    sizes = []
    for number in range(8):
        page.evaluate(f"footfall.track('capped', {{number: {number}}})")
        sizes.append(len(queued(page)))
    page.evaluate("footfall.flush()")  # fails offline: all stays queued
    assert sizes == [1, 2, 3, 3, 3, 3, 3, 3]
    assert [message["properties"]["number"] for message in queued(page)] == [5, 6, 7]  # the oldest went first
    context.set_offline(False)
    sent_once_queue_is_empty(page)
    server.wait_until_stored()

    rows = stored(server, anonymous_id, has("capped", 3))
    assert [row["properties"]["number"] for row in named(rows, "capped")] == [5, 6, 7]


def test_flush_at_sends_a_batch_as_soon_as_that_many_events_are_queued(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/", flushInterval=600_000, flushAt=4)
    anonymous_id = page.evaluate("footfall.anonymousId()")
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda request: bodies.append(json.loads(request.post_data or "{}")) if "/v1/batch" in request.url else None)
    page.evaluate("footfall.track('counted', {number: 0}); footfall.track('counted', {number: 1})")
    page.wait_for_timeout(300)
    assert len(queued(page)) == 3  # the page view and two events: one short of flushAt
    assert bodies == []
    page.evaluate("footfall.track('counted', {number: 2})")  # the fourth: sent at once, no flush() call
    sent_once_queue_is_empty(page)

    rows = stored(server, anonymous_id, has("counted", 3))
    assert [row["properties"]["number"] for row in named(rows, "counted")] == [0, 1, 2]
    assert len(named(rows, "page_view")) == 1
    assert [len(body["batch"]) for body in bodies] == [4]  # one batch of all four


def test_a_retry_after_a_lost_answer_resends_the_same_message_ids_and_stores_once(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    bodies: list[dict[str, Any]] = []

    def collector(route: Any) -> None:
        bodies.append(json.loads(route.request.post_data))
        if len(bodies) == 1:
            route.fetch()  # the collector gets the batch and stores it...
            route.fulfill(status=503, body="{}", headers={"Access-Control-Allow-Origin": "*"})  # ...the page hears 503
        else:
            route.continue_()

    context.route(f"{server.url}/v1/batch", collector)
    page = open_page(context, site.url + "/", flushInterval=600_000, flushAt=1000)
    anonymous_id = page.evaluate("footfall.anonymousId()")
    for number in range(3):
        page.evaluate(f"footfall.track('retried', {{number: {number}}})")
    page.evaluate("footfall.flush()")
    sent_once_queue_is_empty(page)  # the retry, after a backoff of 0.5 to 1 s
    server.wait_until_stored()

    assert len(bodies) == 2
    first = message_ids(bodies[0])
    assert len(first) == 4  # the page view and the three events
    assert message_ids(bodies[1]) == first
    rows = stored(server, anonymous_id, has("retried", 3))
    assert sorted(row["event_id"] for row in rows) == sorted(first)  # each event once


def test_retries_back_off_exponentially_with_jitter(context: BrowserContext, site: PageSite, server: LiveServer) -> None:
    bodies: list[dict[str, Any]] = []

    def always_503(route: Any) -> None:
        bodies.append(json.loads(route.request.post_data))
        route.fulfill(status=503, body="{}", headers={"Access-Control-Allow-Origin": "*"})

    context.route(f"{server.url}/v1/batch", always_503)
    context.add_init_script(TIME_FETCHES)
    page = open_page(context, site.url + "/")
    # The first send and three retries: 1 s, 2 s and 4 s, each times 0.5 to 1.
    page.wait_for_function("window.__sends.length >= 4", timeout=20_000)
    sends = page.evaluate("window.__sends")
    waits = [after["start"] - before["end"] for before, after in itertools.pairwise(sends[:4])]
    for attempt, wait in enumerate(waits):
        base = 1000 * 2**attempt
        # Never before half the base; late timers on a busy machine get some slack.
        assert base / 2 - 5 <= wait <= base + 750, waits
    assert waits[2] > waits[0] + 1000, waits
    assert all(message_ids(body) == message_ids(bodies[0]) for body in bodies), "a retry sends the same messages"


def test_a_page_closed_offline_leaves_its_events_to_the_next_page(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    stored(server, anonymous_id, has("page_view"))
    context.set_offline(True)
    page.evaluate("footfall.track('written_offline')")
    page.close()  # the beacon would be lost offline, so the events stay in localStorage
    context.set_offline(False)
    later = open_page(context, site.url + "/later")
    assert later.evaluate("footfall.anonymousId()") == anonymous_id

    rows = stored(server, anonymous_id, lambda rows: has("written_offline")(rows) and has("page_view", 2)(rows))
    assert len(named(rows, "written_offline")) == 1
    assert [row["path"] for row in named(rows, "page_leave")][:1] == ["/"]


def test_retries_after_503_and_drops_after_400(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = context.new_page()
    answers = ["503", "pass"]  # then every request passes
    calls: list[str] = []

    def collector(route: Any) -> None:
        answer = answers.pop(0) if answers else "pass"
        calls.append(answer)
        if answer == "pass":
            route.continue_()
        else:
            route.fulfill(status=int(answer), body="{}", headers={"Access-Control-Allow-Origin": "*"})

    page.route(f"{server.url}/v1/batch", collector)
    page.goto(site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    # Route handlers run only while Playwright has control: wait in the page, not in time.sleep.
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    rows = stored(server, anonymous_id, has("page_view"))
    assert calls[:2] == ["503", "pass"]
    assert len(named(rows, "page_view")) == 1

    answers.extend(["400"] * 10)
    before = len(calls)
    page.evaluate("footfall.track('refused')")
    page.wait_for_timeout(1500)  # a retry would have come within a second
    assert calls[before:] == ["400"]
    assert "refused" not in page.evaluate("JSON.stringify(localStorage)")


def test_page_leave_counts_visible_time_only_and_goes_by_beacon(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    context.add_init_script(COUNT_FETCHES)
    # No timed or size-triggered sends: only beacons (on hiding and on leaving) can deliver.
    page = open_page(context, site.url + "/", flushInterval=600_000, flushAt=1000)
    anonymous_id = page.evaluate("footfall.anonymousId()")
    # Times from the page's own clock (machines under load stretch anything
    # measured from here): the tracker started before `first`, after 0.
    first = page.evaluate("performance.now()")
    page.wait_for_timeout(800)
    hidden_at = page.evaluate(f"(() => {{ const t = performance.now(); ({SET_VISIBILITY})('hidden'); return t; }})()")
    page.wait_for_timeout(1000)
    shown_at = page.evaluate(f"(() => {{ ({SET_VISIBILITY})('visible'); return performance.now(); }})()")
    page.wait_for_timeout(400)
    assert page.evaluate("window.__fetches") == 0
    closing_at = page.evaluate("performance.now()")
    page.close()

    rows = stored(server, anonymous_id, has("page_leave"))
    (leave,) = named(rows, "page_leave")
    dwell = leave["properties"]["dwell_ms"]
    hidden = shown_at - hidden_at
    assert dwell >= (hidden_at - first) + (closing_at - shown_at) - 50, (leave["properties"], first, hidden_at, shown_at, closing_at)
    # Had the hidden second counted, dwell would be at least `closing_at`; half
    # of it is left as slack for the time page.close() takes on a busy machine.
    assert dwell <= closing_at - hidden / 2, (leave["properties"], first, hidden_at, shown_at, closing_at)
    assert leave["properties"]["max_scroll"] > 0
    assert leave["properties"]["signal"] == "passive"
    assert len(named(rows, "page_view")) == 1  # beaconed when the page was hidden, once


# -- identity and consent -----------------------------------------------------------------


def test_identify_alias_and_reset(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    page.evaluate("footfall.identify('user-42', {plan: 'pro'})")
    page.evaluate("footfall.track('after_identify')")
    page.evaluate("footfall.alias('user-42-new')")
    page.evaluate("footfall.reset()")
    page.evaluate("footfall.track('after_reset')")
    new_id = page.evaluate("footfall.anonymousId()")
    assert new_id != anonymous_id
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, has("alias"))
    (identify,) = named(rows, "identify")
    assert identify["user_id"] == "user-42"
    assert identify["properties"] == {"plan": "pro"}  # traits carry no "signal"
    assert named(rows, "after_identify")[0]["user_id"] == "user-42"
    (alias,) = named(rows, "alias")
    assert (alias["user_id"], alias["properties"]["previous_id"]) == ("user-42-new", "user-42")
    (after_reset,) = named(stored(server, new_id, has("after_reset")), "after_reset")
    assert after_reset["user_id"] is None
    # A new page in the same browser keeps the id.
    assert open_page(context, site.url + "/").evaluate("footfall.anonymousId()") == new_id


@pytest.mark.parametrize("persistence", ["cookie", "memory"])
def test_where_the_ids_are_kept(context: BrowserContext, site: PageSite, persistence: str) -> None:
    page = open_page(context, site.url + "/", persistence=persistence)
    anonymous_id = page.evaluate("footfall.anonymousId()")
    page.evaluate("footfall.identify('user-7')")
    stored_keys = page.evaluate("Object.keys(localStorage)")
    cookie = page.evaluate("document.cookie")
    page.close()
    again = open_page(context, site.url + "/", persistence=persistence)
    if persistence == "cookie":
        assert f"ff_aid={anonymous_id}" in cookie
        assert "ff_uid=user-7" in cookie
        assert not {"ff_aid", "ff_uid"} & set(stored_keys)  # the queue may still be in localStorage
        assert (again.evaluate("footfall.anonymousId()"), again.evaluate("footfall.userId()")) == (anonymous_id, "user-7")
    else:
        assert (stored_keys, cookie) == ([], "")  # nothing kept, not even a queue
        assert again.evaluate("footfall.anonymousId()") != anonymous_id
        assert again.evaluate("footfall.userId()") is None


def test_opt_out_sends_nothing(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = open_page(context, site.url + "/")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    stored(server, anonymous_id, has("page_view"))
    page.evaluate("footfall.optOut()")
    sent = batch_requests(page)
    page.click("#like")
    page.evaluate("footfall.track('after_opt_out')")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_timeout(600)
    assert page.evaluate("footfall.consent()") == "denied"
    assert not [key for key in page.evaluate("Object.keys(localStorage)") if key != "ff_consent"]
    page.close()  # no beacon either

    again = context.new_page()
    sent_again = batch_requests(again)
    again.goto(site.url + "/")
    again.click("#like")
    again.wait_for_timeout(600)
    assert again.evaluate("footfall.consent()") == "denied"
    second_id = again.evaluate("footfall.anonymousId()")
    again.close()
    server.wait_until_stored()
    assert sent == []
    assert sent_again == []
    rows = stored(server, anonymous_id, lambda rows: True)
    assert [row["event"] for row in rows] == ["page_view"]  # only what was sent before opting out
    assert stored(server, second_id, lambda rows: True) == []


def test_require_consent_sends_nothing_until_opt_in(context: BrowserContext, server: LiveServer, site: PageSite) -> None:
    page = context.new_page()
    sent = batch_requests(page)
    page.add_init_script("window.FF_OPTIONS = {requireConsent: true};")
    page.goto(site.url + "/")
    page.click("#like")
    page.evaluate("footfall.track('before_consent')")
    page.wait_for_timeout(800)
    assert page.evaluate("footfall.consent()") == "pending"
    assert sent == []
    # Nothing kept in the browser either until consent: no id, no queue.
    assert page.evaluate("Object.keys(localStorage)") == []
    assert page.evaluate("document.cookie") == ""

    page.evaluate("footfall.optIn()")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    rows = stored(server, anonymous_id, lambda rows: has("before_consent")(rows) and has("click")(rows))
    assert len(named(rows, "page_view")) == 1  # what happened before consent, sent once given
    assert sent

    # The answer is kept: the next page sends without asking again.
    later = context.new_page()
    later.add_init_script("window.FF_OPTIONS = {requireConsent: true};")
    later.goto(site.url + "/again")
    assert later.evaluate("footfall.consent()") == "granted"
    stored(server, anonymous_id, has("page_view", 2))


# -- the demo shop, same origin as the collector ----------------------------------------


def test_demo_shop_journey(context: BrowserContext, server: LiveServer) -> None:
    secrets = ("secret-search-3090", "Ada Secretname", "ada-secret@example.com", "4242424242424242")
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_function("window.footfall && footfall.anonymousId()")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    assert page.title() == "Footfall demo shop"

    page.fill("input[name=q]", secrets[0])
    page.press("input[name=q]", "Enter")
    page.click("a[data-ff=clear-search]")
    page.click(".card:has(a[href='/product/2']) button.add")
    page.click("a[href='/product/3']")
    page.wait_for_selector("h1:has-text('Packable rain shell')")
    page.click("button.add")
    page.click("a[data-ff=nav-cart]")
    page.click("#checkout")
    page.fill("input[name=name]", secrets[1])
    page.fill("input[name=email]", secrets[2])
    page.fill("input[name=card]", secrets[3])
    page.click("button[type=submit][data-ff=place-order]")
    page.wait_for_selector("text=Thank you")
    page.evaluate("footfall.flush()")

    rows = stored(server, anonymous_id, has("purchase"))
    (purchase,) = named(rows, "purchase")
    assert purchase["properties"]["revenue"] == 188.5  # 59.50 + 129.00
    assert sorted(purchase["properties"]["product_ids"]) == ["2", "3"]
    assert purchase["properties"]["signal"] == "active"
    assert [row["properties"]["product_id"] for row in named(rows, "add_to_cart")] == ["2", "3"]
    assert named(rows, "view_product")[0]["properties"]["signal"] == "passive"
    assert named(rows, "search")[0]["properties"]["results"] == 0
    assert {row["path"] for row in named(rows, "page_view")} >= {"/", "/product/3", "/cart"}
    assert {row["properties"]["form"] for row in named(rows, "form_submit")} == {"search", "checkout-form"}
    everything = json.dumps(server.sql(f"SELECT * FROM events WHERE anonymous_id = '{anonymous_id}'"))
    for secret in secrets:
        assert secret not in everything

    # The panel shows this browser's own events, read through /demo/events.
    page.wait_for_selector("#own-events li:has-text('purchase')", timeout=10_000)
    with urllib.request.urlopen(f"{server.url}/demo/events?anonymous_id={anonymous_id}", timeout=10) as response:
        shown = json.loads(response.read())["events"]
    assert 0 < len(shown) <= 20
    assert all(set(event) == {"timestamp", "event", "path", "properties"} for event in shown)


def test_demo_shop_scroll_hover_offline_and_close(context: BrowserContext, server: LiveServer) -> None:
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_function("window.footfall && footfall.anonymousId()")
    anonymous_id = page.evaluate("footfall.anonymousId()")
    page.hover(".card[data-ff-hover='card-1']")
    page.wait_for_timeout(500)  # longer than minHoverMs (300 ms)
    page.mouse.move(5, 5)  # off the card: the hover ends
    scroll_to(page, page.evaluate("document.documentElement.scrollHeight"))
    page.evaluate("footfall.flush()")
    sent_once_queue_is_empty(page)

    context.set_offline(True)
    for number in range(2):
        page.evaluate(f"footfall.track('shop_offline', {{number: {number}}})")
    page.evaluate("footfall.flush()")  # fails offline: kept for later
    assert sorted(message["event"] for message in queued(page) if message.get("event") == "shop_offline") == ["shop_offline"] * 2
    context.set_offline(False)  # "online": sent at once
    sent_once_queue_is_empty(page)
    page.close()  # page_leave goes by beacon

    stored(server, anonymous_id, lambda rows: has("page_leave")(rows) and has("shop_offline", 2)(rows))
    server.wait_until_stored()  # then nothing more is on its way
    rows = stored(server, anonymous_id, has("page_leave"))
    assert len({row["event_id"] for row in rows}) == len(rows)
    assert sorted(row["properties"]["number"] for row in named(rows, "shop_offline")) == [0, 1]  # each once
    assert sorted(row["properties"]["depth"] for row in named(rows, "scroll")) == [25, 50, 75, 100]
    (hover,) = named(rows, "hover")
    assert hover["properties"]["element"] == "card-1"
    assert 400 <= hover["properties"]["duration_ms"] <= 3000
    (leave,) = named(rows, "page_leave")
    assert (leave["path"], leave["properties"]["max_scroll"]) == ("/", 100)
    assert leave["properties"]["dwell_ms"] > 0
