"""footfall.js and the demo shop without a browser: the script as package data
and its route (gzip, ETag, caching), the shop's routes, what "your events" may
show, the shop's write key, and the CLI options that serve them. The browser
side is in test_tracker_browser.py."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from footfall import __version__
from footfall.api.app import create_app
from footfall.api.service import Service
from footfall.config import init_data_dir
from footfall.keys import KeyStore
from footfall.tracker import package_file, tracker_script
from footfall.tracker.demo_site import (
    DEMO_KEY_FILE,
    DEMO_SOURCE,
    OWN_EVENTS_LIMIT,
    DemoSite,
    DemoSiteError,
    demo_write_key,
)

from .live import free_port
from .test_cli import run

GZIP_BUDGET = 8 * 1024


class Shop:
    """The in-process app (collector, footfall.js, demo shop) over a fresh store."""

    def __init__(self, data_dir: Path) -> None:
        init_data_dir(data_dir)
        self.service = Service(data_dir, fsync=False, start_worker=False)
        self.write_key, _ = self.service.keys.create("write", DEMO_SOURCE)
        app = create_app(self.service.database, "admin-token", service=self.service, demo_site=DemoSite(self.write_key))
        self.client = TestClient(app)

    def send(self, *messages: dict[str, Any]) -> None:
        body = json.dumps({"batch": list(messages), "writeKey": self.write_key})
        assert self.client.post("/v1/batch", content=body, headers={"Content-Type": "text/plain"}).status_code == 200
        while self.service.worker.process_available():
            pass


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    harness = Shop(tmp_path / "data")
    yield harness
    harness.client.close()
    harness.service.close()


def from_tracker(event: str, anonymous_id: str, **fields: Any) -> dict[str, Any]:
    """A message as footfall.js sends it."""
    return {
        "type": "track", "event": event, "anonymousId": anonymous_id, "messageId": str(uuid.uuid4()),
        "context": {"library": {"name": "footfall.js", "version": __version__}, "page": {"path": "/"}}, **fields,
    }


# -- the script ---------------------------------------------------------------------------


def test_the_script_fits_its_budget_and_carries_the_package_version() -> None:
    script = tracker_script()
    assert len(gzip.compress(script, 9)) < GZIP_BUDGET
    assert f'const VERSION = "{__version__}";' in script.decode()


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [("gzip, deflate, br", True), ("br;q=1, gzip;q=0.5", True), ("gzip;q=0", False), ("identity", False)],
)
def test_the_script_route(shop: Shop, accept_encoding: str, gzipped: bool) -> None:
    response = shop.client.get("/static/footfall.js", headers={"Accept-Encoding": accept_encoding})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert "Accept-Encoding" in response.headers["vary"]
    assert response.headers.get("content-encoding") == ("gzip" if gzipped else None)
    assert response.content == tracker_script()  # the client inflates what came gzipped
    if gzipped:
        assert int(response.headers["content-length"]) < GZIP_BUDGET

    etag = response.headers["etag"]
    again = shop.client.get("/static/footfall.js", headers={"Accept-Encoding": accept_encoding, "If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == etag


def test_the_gzip_and_plain_forms_have_their_own_etags(shop: Shop) -> None:
    plain = shop.client.get("/static/footfall.js", headers={"Accept-Encoding": "identity"}).headers["etag"]
    packed = shop.client.get("/static/footfall.js", headers={"Accept-Encoding": "gzip"}).headers["etag"]
    assert plain != packed
    stale = shop.client.get("/static/footfall.js", headers={"Accept-Encoding": "gzip", "If-None-Match": plain})
    assert stale.status_code == 200


def test_every_tracker_asset_is_package_data() -> None:
    """The wheel carries only what pyproject's package-data names; an editable
    install would hide a file left out."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["footfall.tracker"]
    package = root / "src" / "footfall" / "tracker"
    assets = {path for path in package.rglob("*") if path.is_file() and path.suffix not in (".py", ".pyc")}
    covered = {path for pattern in patterns for path in package.glob(pattern)}
    assert assets, "no assets found"
    assert assets <= covered, f"not package data: {sorted(str(path.relative_to(package)) for path in assets - covered)}"


# -- the demo shop ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/product/3", "/cart"])
def test_every_view_of_the_shop_is_its_page_with_the_write_key(shop: Shop, path: str) -> None:
    response = shop.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    config = response.text.split('<script id="footfall-config" type="application/json">')[1].split("</script>")[0]
    assert json.loads(config) == {"writeKey": shop.write_key, "eventsUrl": "/demo/events"}
    assert '<script src="/static/footfall.js"></script>' in response.text


def test_the_page_config_cannot_close_its_script_element() -> None:
    page = DemoSite("</script><script>alert(1)</script>").page().decode()
    assert "</script><script>alert(1)" not in page
    assert "\\u003c/script>" in page


@pytest.mark.parametrize(("path", "media_type"), [("/shop/shop.js", "text/javascript"), ("/shop/shop.css", "text/css")])
def test_the_shop_assets(shop: Shop, path: str, media_type: str) -> None:
    response = shop.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.content == package_file("shop", path.rsplit("/", 1)[1])


def test_without_the_demo_site_there_is_no_shop(tmp_path: Path) -> None:
    init_data_dir(tmp_path)
    with Service(tmp_path, fsync=False, start_worker=False) as service:
        client = TestClient(create_app(service.database, "admin-token", service=service))
        assert client.get("/static/footfall.js").status_code == 200
        for path in ("/", "/demo/events?anonymous_id=" + str(uuid.uuid4())):
            assert client.get(path).status_code == 404


# -- "your events": what the shop's panel may read without a secret key ---------------------


def test_own_events_are_only_the_trackers_events_of_that_id(shop: Shop) -> None:
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    shop.send(
        from_tracker("scroll", mine, properties={"signal": "passive", "depth": 50, "email": "me@example.com"}),
        {**from_tracker("", mine), "type": "page", "properties": {"signal": "passive"}},
        {**from_tracker("", mine), "type": "identify", "userId": "u-1", "traits": {"email": "me@example.com"}},
        from_tracker("add_to_cart", mine, userId="u-1", properties={"product_id": "3", "price": 129, "note": "gift"}),
        from_tracker("scroll", theirs, properties={"depth": 75}),
        {"type": "track", "event": "server_side", "anonymousId": mine, "messageId": str(uuid.uuid4())},
    )
    response = shop.client.get(f"/demo/events?anonymous_id={mine.upper()}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    answer = response.json()
    assert answer["anonymous_id"] == mine
    events = {event["event"]: event for event in answer["events"]}
    assert set(events) == {"scroll", "page_view", "add_to_cart"}  # not identify, not another library's
    assert events["scroll"]["properties"] == {"signal": "passive", "depth": 50}  # no email
    assert events["add_to_cart"]["properties"] == {"product_id": "3", "price": 129}
    assert all(set(event) == {"timestamp", "event", "path", "properties"} for event in answer["events"])
    assert "u-1" not in response.text
    assert "me@example.com" not in response.text


def test_own_events_are_the_latest_few(shop: Shop) -> None:
    mine = str(uuid.uuid4())
    shop.send(*(from_tracker("step", mine, properties={"depth": number}, timestamp=f"2026-01-01T00:00:{number:02d}Z") for number in range(30)))
    events = shop.client.get(f"/demo/events?anonymous_id={mine}").json()["events"]
    assert [event["properties"]["depth"] for event in events] == list(range(29, 29 - OWN_EVENTS_LIMIT, -1))


@pytest.mark.parametrize("query", ["", "?anonymous_id=", "?anonymous_id=a1", "?anonymous_id=x'%20OR%201=1%20--"])
def test_own_events_need_an_id_footfall_js_would_make(shop: Shop, query: str) -> None:
    response = shop.client.get(f"/demo/events{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert "anonymous_id" in response.json()["error"]["message"]


# -- the shop's write key -------------------------------------------------------------------


def test_the_shop_key_is_made_once_and_kept_while_active(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    key = demo_write_key(tmp_path, keys)
    record = keys.authenticate(key, "write")
    assert record is not None
    assert record.source == DEMO_SOURCE
    assert stat.S_IMODE((tmp_path / DEMO_KEY_FILE).stat().st_mode) == 0o600
    assert demo_write_key(tmp_path, keys) == key
    keys.revoke(record.id)
    replacement = demo_write_key(tmp_path, keys)
    assert replacement != key
    assert keys.authenticate(replacement, "write") is not None


def test_a_given_shop_key_must_be_an_active_write_key(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    write, _ = keys.create("write", "web")
    secret, _ = keys.create("secret", "admin")
    assert demo_write_key(tmp_path, keys, write) == write
    for wrong in (secret, "ffw_unknown"):
        with pytest.raises(DemoSiteError, match="not an active write key"):
            demo_write_key(tmp_path, keys, wrong)
    assert not (tmp_path / DEMO_KEY_FILE).exists()


# -- the CLI ------------------------------------------------------------------------------


def test_serve_refuses_a_demo_key_without_the_demo_site(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "--data-dir", str(tmp_path), "serve", "--demo-write-key", "ffw_x")
    assert status == 2
    assert "--demo-write-key goes with --demo-site" in err


@pytest.mark.parametrize("command", [["serve", "--demo-site"], ["demo", "--users", "5", "--days", "1"]])
def test_a_taken_port_is_a_clear_error_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        status, _, err = run(capsys, "--data-dir", str(tmp_path / "data"), *command, "--port", port)
    assert status == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "--port" in err
    assert not (tmp_path / "data").exists()  # the demo did not start loading


def test_demo_serves_the_shop_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "footfall", "--data-dir", str(data_dir), "demo", "--users", "20", "--days", "1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[0].decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    page = response.read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the demo shop did not come up"
                time.sleep(0.2)
        key = (data_dir / DEMO_KEY_FILE).read_text().strip()
        assert json.dumps(key) in page
        record = KeyStore(data_dir).authenticate(key, "write")
        assert record is not None
        assert record.source == DEMO_SOURCE
        process.send_signal(signal.SIGINT)  # Ctrl-C
        output = process.communicate(timeout=60)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "Footfall demo" in output
    assert f"http://127.0.0.1:{port}/" in output
    assert "Ctrl-C to stop" in output


def test_own_events_include_the_visitors_segment_changes(shop: Shop) -> None:
    from footfall.segments import ready_made

    shop.service.catalog.save_all(ready_made())
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    shop.send(from_tracker("scroll", mine, timestamp=now), from_tracker("scroll", theirs, timestamp=now))
    shop.service.worker.process_available()
    events = shop.client.get(f"/demo/events?anonymous_id={mine}").json()["events"]
    entered = [event for event in events if event["event"] == "segment_entered"]
    assert [event["properties"] for event in entered] == [{"segment_id": "active_recent"}]
    assert len([event for event in events if event["event"] == "scroll"]) == 1
