"""``GET /v1/profiles/{id}`` on a running server: the store process keeps
profiles as the worker stores events."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from footfall.sdk import Client

from .live import LiveServer, person_of, running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("profiles-server")) as live:
        yield live


def get(server: LiveServer, path: str, key: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(server.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_profile_follows_what_the_person_does(server: LiveServer) -> None:
    with Client(server.write_key, server.url, flush_at_exit=False) as client:
        client.page("Home", {"signal": "passive"}, anonymous_id="visitor-1", context={"page": {"url": "https://shop.example/"}})
        client.track("add_to_cart", {"product_id": "p-1"}, anonymous_id="visitor-1")
        client.identify("member-1", {"plan": "pro"}, anonymous_id="visitor-1")
        client.track("purchase", {"revenue": 25.0}, user_id="member-1")
        assert client.flush(timeout=30)
    server.wait_until_stored()
    person = person_of(server, "user", "member-1")
    status, profile = get(server, f"/v1/profiles/{person}", server.secret_key)
    assert status == 200
    assert profile["person_id"] == person
    assert (profile["user_id"], profile["traits"]) == ("member-1", {"plan": "pro"})
    assert profile["events"] == 4
    assert profile["revenue"] == 25.0
    assert profile["counts"]["30d"] == {"add_to_cart": 1, "identify": 1, "page_view": 1, "purchase": 1}
    assert profile["engagement_score"] == 0.5 + 3 + 5  # a passive page view, a cart add, a purchase
    # The same profile by either of the person's identities.
    by_user = get(server, "/v1/profiles/member-1?kind=user", server.secret_key)[1]
    assert {**by_user, "as_of": None} == {**profile, "as_of": None}
    assert get(server, "/v1/profiles/visitor-1?kind=anonymous", server.secret_key)[1]["person_id"] == person


def test_profiles_need_the_secret_key_and_a_known_person(server: LiveServer) -> None:
    status, body = get(server, "/v1/profiles/anyone", None)
    assert status == 401
    assert get(server, "/v1/profiles/anyone", server.write_key)[0] == 401  # a write key never reads
    status, body = get(server, "/v1/profiles/nobody-here", server.secret_key)
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert "nobody-here" in body["error"]["message"]
    status, body = get(server, "/v1/profiles/x?kind=email", server.secret_key)
    assert (status, body["error"]["code"]) == (400, "bad_request")


def test_profiles_survive_a_restart(tmp_path: Path) -> None:
    with running(tmp_path / "server") as live:
        with Client(live.write_key, live.url, flush_at_exit=False) as client:
            for index in range(5):
                client.track("page_view", {"signal": "passive"}, anonymous_id="returning")
                client.track("purchase", {"revenue": 10 + index}, anonymous_id="returning")
            assert client.flush(timeout=30)
        live.wait_until_stored()
        person = person_of(live, "anonymous", "returning")
        before = get(live, f"/v1/profiles/{person}", live.secret_key)[1]
        live.stop()
        live.start()
        after = get(live, f"/v1/profiles/{person}", live.secret_key)[1]
    assert before["events"] == after["events"] == 10
    assert after["revenue"] == before["revenue"] == 60.0
    assert {key: value for key, value in after.items() if key != "as_of"} == {
        key: value for key, value in before.items() if key != "as_of"
    }
