"""The collector in process: auth, limits, bad input, dead letters, plans, privacy,
exactly-once, identity. Each bad-input case names the status and the problem."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from footfall.api.app import create_app
from footfall.api.service import Service
from footfall.config import init_data_dir
from footfall.intake.dead_letters import list_letters, replay
from footfall.intake.plans import PlanBook


class Harness:
    def __init__(self, data_dir: Path) -> None:
        init_data_dir(data_dir)
        self.data_dir = data_dir
        self.service = Service(data_dir, fsync=False, start_worker=False)
        self.write_key, self.write_record = self.service.keys.create("write", "web")
        self.secret_key, _ = self.service.keys.create("secret", "admin")
        self.client = TestClient(create_app(self.service.database, "admin-token", service=self.service))

    def auth(self, key: str | None = None) -> dict[str, str]:
        token = base64.b64encode(f"{key or self.write_key}:".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(path, content=content, headers={**self.auth(), **(headers or {})})

    def drain(self) -> None:
        while self.service.worker.process_available():
            pass

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.service.database.query(sql).rows


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "data")
    yield h
    h.service.close()


def track(event: str = "viewed", anon: str = "a1", **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "anonymousId": anon, "messageId": str(uuid.uuid4()), **fields}


# -- accepted input -------------------------------------------------------------------


def test_a_batch_is_stored_once_with_its_fields(harness: Harness) -> None:
    messages = [
        track("viewed", properties={"sku": "p1", "price": 9.5}, context={"page": {"url": "https://s.example/p/1"}}),
        {"type": "page", "name": "Home", "anonymousId": "a1", "messageId": "m-page"},
        track("added_to_cart", properties={"sku": "p1"}),
    ]
    response = harness.post("/v1/batch", {"batch": messages})
    assert response.status_code == 200
    assert response.json() == {"success": True, "accepted": 3}
    harness.drain()
    rows = harness.rows("SELECT event, path, properties FROM events ORDER BY timestamp, event")
    assert sorted(row[0] for row in rows) == ["added_to_cart", "page_view", "viewed"]
    viewed = next(row for row in rows if row[0] == "viewed")
    assert viewed[1] == "/p/1"
    assert json.loads(viewed[2]) == {"sku": "p1", "price": 9.5}


@pytest.mark.parametrize("endpoint", ["track", "identify", "page", "screen", "group", "alias"])
def test_each_single_message_endpoint(harness: Harness, endpoint: str) -> None:
    message: dict[str, Any] = {"userId": "u1", "messageId": f"m-{endpoint}"}
    message.update(
        {"track": {"event": "clicked"}, "identify": {"traits": {"plan": "pro"}}, "page": {"name": "Pricing"},
         "screen": {"name": "Home"}, "group": {"groupId": "g1"}, "alias": {"previousId": "anon-9"}}[endpoint]
    )
    assert harness.post(f"/v1/{endpoint}", message).status_code == 200
    harness.drain()
    assert harness.rows("SELECT type, event_id FROM events") == [(endpoint, f"m-{endpoint}")]


def test_gzip_bodies_are_accepted(harness: Harness) -> None:
    body = gzip.compress(json.dumps({"batch": [track(), track()]}).encode())
    response = harness.post("/v1/batch", body, {"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert response.json() == {"success": True, "accepted": 2}


def test_write_key_in_the_body_works_for_beacons(harness: Harness) -> None:
    body = json.dumps({"batch": [track()], "writeKey": harness.write_key}).encode()
    response = harness.client.post("/v1/batch", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200


def test_retries_and_replays_store_nothing_twice(harness: Harness) -> None:
    batch = {"batch": [track(), track(), track()]}
    for _ in range(3):  # an SDK retrying after a timeout
        assert harness.post("/v1/batch", batch).status_code == 200
    harness.drain()
    assert harness.rows("SELECT count(*) FROM events") == [(3,)]
    assert harness.service.worker.stats.duplicates == 6


def test_identify_links_anonymous_history_and_set_once(harness: Harness) -> None:
    harness.post("/v1/batch", {"batch": [
        track("viewed", anon="anon-1", timestamp="2026-01-01T10:00:00Z"),
        {"type": "identify", "anonymousId": "anon-1", "userId": "ada", "timestamp": "2026-01-01T10:01:00Z",
         "traits": {"plan": "free", "$set_once": {"first_channel": "ads"}}},
        {"type": "identify", "userId": "ada", "timestamp": "2026-01-01T10:02:00Z",
         "traits": {"plan": "pro", "$set_once": {"first_channel": "email"}}},
        track("bought", anon="anon-1", userId="ada", timestamp="2026-01-01T10:03:00Z"),
    ]})
    harness.drain()
    assert harness.rows("SELECT count(DISTINCT person_id) FROM events") == [(1,)]
    (traits,) = harness.rows("SELECT traits FROM persons")[0]
    assert json.loads(traits) == {"plan": "pro", "first_channel": "ads"}


def test_two_identified_users_are_not_merged_by_a_shared_device(harness: Harness) -> None:
    harness.post("/v1/batch", {"batch": [
        {"type": "identify", "anonymousId": "device", "userId": "ada", "timestamp": "2026-01-01T10:00:00Z"},
        {"type": "identify", "anonymousId": "device", "userId": "bob", "timestamp": "2026-01-01T11:00:00Z"},
    ]})
    harness.drain()
    assert harness.rows("SELECT count(DISTINCT person_id) FROM events") == [(2,)]


def test_consent_declined_messages_are_not_stored(harness: Harness) -> None:
    declined = track(context={"consent": {"tracking": False}})
    response = harness.post("/v1/batch", {"batch": [declined, track()]})
    assert response.json() == {"success": True, "accepted": 1, "declined": 1}
    harness.drain()
    assert harness.rows("SELECT count(*) FROM events") == [(1,)]
    assert harness.rows("SELECT count(*) FROM dead_letters") == [(0,)]


# -- keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorised"),
        ({"Authorization": "Basic " + base64.b64encode(b"ffw_nope:").decode()}, 401, "unauthorised"),
        ({"Authorization": "Basic !!!not-base64"}, 401, "unauthorised"),
    ],
)
def test_missing_or_wrong_write_key(harness: Harness, headers: dict[str, str], status: int, code: str) -> None:
    response = harness.client.post("/v1/batch", content=json.dumps({"batch": [track()]}), headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_keys_never_mix(harness: Harness) -> None:
    # A secret key sends no events ...
    refused = harness.post("/v1/batch", {"batch": [track()]}, harness.auth(harness.secret_key))
    assert refused.status_code == 403
    assert "write key" in refused.json()["error"]["message"]
    # ... and a write key reads nothing.
    read = {"sql": "SELECT 1"}
    assert harness.client.post("/v1/sql", json=read, headers={"Authorization": f"Bearer {harness.write_key}"}).status_code == 401
    assert harness.client.post("/v1/sql", json=read, headers={"Authorization": f"Bearer {harness.secret_key}"}).status_code == 200


def test_a_revoked_key_is_refused_at_once(harness: Harness) -> None:
    assert harness.post("/v1/batch", {"batch": [track()]}).status_code == 200
    harness.service.keys.revoke(harness.write_record.id)
    assert harness.post("/v1/batch", {"batch": [track()]}).status_code == 401


def test_keys_are_stored_hashed(harness: Harness) -> None:
    text = (harness.data_dir / "keys.json").read_text()
    assert harness.write_key not in text
    assert harness.secret_key not in text
    assert (harness.data_dir / "keys.json").stat().st_mode & 0o077 == 0


# -- bad input: the right status and a JSON body naming the problem ----------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "field", "words"),
    [
        ("/v1/batch", b'{"batch": [', 400, "$", "not valid JSON"),
        ("/v1/batch", b'{"batch": {"type": "track"}}', 400, "$.batch", "expected array"),
        ("/v1/batch", b'[1, 2]', 400, "$", "expected object"),
        ("/v1/track", b'{"event": 5, "userId": "u"}', 400, "$.event", "expected str"),
        ("/v1/track", b'{"event": "x"}', 400, "$", "anonymousId or a userId"),
        ("/v1/track", b'{"userId": "u"}', 400, "$.event", "is required"),
        ("/v1/alias", b'{"previousId": "a"}', 400, "$.userId", "is required for alias"),
        ("/v1/identify", b'{"type": "track", "userId": "u", "event": "x"}', 400, "$.type", "takes 'identify'"),
        ("/v1/track", b'{"event": "x", "userId": "u", "timestamp": "yesterday"}', 400, "$.timestamp", "datetime"),
    ],
)
def test_bad_input_is_named(harness: Harness, path: str, body: bytes, status: int, field: str, words: str) -> None:
    response = harness.post(path, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["field"] == field
    assert words in error["message"]
    assert error["dead_lettered"] is True


def test_a_bad_message_in_a_batch_is_dead_lettered_and_the_rest_accepted(harness: Harness) -> None:
    bad = {"type": "track", "anonymousId": "a1", "event": ""}
    response = harness.post("/v1/batch", {"batch": [track(), bad, track()]})
    assert response.status_code == 200
    assert response.json()["rejected"] == [{"index": 1, "field": "$.batch[1].event", "reason": "must not be empty"}]
    harness.drain()
    assert harness.rows("SELECT count(*) FROM events") == [(2,)]
    (letter,) = list_letters(harness.service.database)
    assert (letter.source, letter.field, letter.reason) == ("web", "$.batch[1].event", "must not be empty")
    assert json.loads(letter.payload) == bad


def test_oversize_message_and_batch(harness: Harness) -> None:
    big = track(properties={"blob": "x" * 40_000})
    single = harness.post("/v1/track", big)
    assert single.status_code == 413
    assert "limit is 32,768 bytes" in single.json()["error"]["message"]
    in_batch = harness.post("/v1/batch", {"batch": [big, track()]})
    assert in_batch.status_code == 200
    assert "limit is 32,768 bytes per message" in in_batch.json()["rejected"][0]["reason"]
    huge = harness.post("/v1/batch", {"batch": [track(properties={"blob": "y" * 20_000}) for _ in range(30)]})
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "too_large"


def test_gzip_bomb_is_refused_without_inflating_it(harness: Harness) -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * 50_000_000 + b"]}")
    assert len(bomb) < 100_000
    response = harness.post("/v1/batch", bomb, {"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "inflates to more than" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("encoding", "body", "words"),
    [("gzip", b"not gzip at all", "not valid gzip"), ("br", b"{}", "not supported")],
)
def test_bad_encodings(harness: Harness, encoding: str, body: bytes, words: str) -> None:
    response = harness.post("/v1/batch", body, {"Content-Encoding": encoding})
    assert response.status_code == 400
    assert words in response.json()["error"]["message"]


def test_unknown_endpoint_and_method(harness: Harness) -> None:
    missing = harness.client.post("/v1/nothing", content=b"{}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = harness.client.get("/v1/batch")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_the_server_keeps_serving_after_bad_input(harness: Harness) -> None:
    for body in (b"\xff\xfe", b"{" * 10_000, b'{"batch": [null, 1, "x", []]}', b""):
        assert harness.post("/v1/batch", body).status_code == 400
    assert harness.post("/v1/batch", {"batch": [track()]}).status_code == 200
    harness.drain()
    assert harness.service.worker.stats.failures == 0


def test_cors_preflight_for_browser_sources(harness: Harness) -> None:
    response = harness.client.options(
        "/v1/batch",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "Authorization, Content-Type"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


# -- privacy -------------------------------------------------------------------------------


def test_ip_is_taken_from_the_request_and_can_be_anonymised_or_dropped(harness: Harness) -> None:
    anonymise, _ = harness.service.keys.create("write", "eu-site", anonymize_ip=True)
    drop, _ = harness.service.keys.create("write", "kiosk", drop_ip=True)
    harness.post("/v1/batch", {"batch": [track("a", context={"ip": "203.0.113.77"})]})
    harness.post("/v1/batch", {"batch": [track("b", context={"ip": "203.0.113.77"})]}, harness.auth(anonymise))
    harness.post("/v1/batch", {"batch": [track("c", context={"ip": "203.0.113.77"})]}, harness.auth(drop))
    harness.post("/v1/batch", {"batch": [track("d")]})
    harness.drain()
    assert dict(harness.rows("SELECT event, ip FROM events")) == {
        "a": "203.0.113.77", "b": "203.0.113.0", "c": None, "d": "testclient",
    }


# -- tracking plans and the dead-letter store -------------------------------------------------

PLAN = {
    "name": "shop",
    "mode": "block",
    "events": {"purchase": {"type": "object", "required": ["revenue"], "properties": {"revenue": {"type": "number", "minimum": 0}}}},
}


def test_block_mode_dead_letters_and_replay_after_fixing_the_plan(harness: Harness) -> None:
    book = harness.service.plans
    book.save(json.dumps(PLAN), "shop.json")
    harness.post("/v1/batch", {"batch": [
        track("purchase", properties={"revenue": 12.5}),
        track("purchase", properties={"revenue": "12.50"}),
        track("viewed"),  # not in the plan: allowed
    ]})
    harness.drain()
    assert sorted(row[0] for row in harness.rows("SELECT event FROM events")) == ["purchase", "viewed"]
    (letter,) = list_letters(harness.service.database)
    assert letter.field == "$.properties.revenue"
    assert "is not of type 'number'" in letter.reason

    # Still failing while the plan stands; stored once the plan accepts strings.
    report = replay(harness.service.database, harness.service.worker.pipeline, harness.service.plans)
    assert report.replayed == 0
    assert report.still_failing[0][0] == letter.id
    fixed = {**PLAN, "events": {"purchase": {"type": "object", "properties": {"revenue": {"type": ["number", "string"]}}}}}
    book.save(json.dumps(fixed), "shop.json")
    report = replay(harness.service.database, harness.service.worker.pipeline, harness.service.plans)
    assert (report.replayed, report.stored_events, report.still_failing) == (1, 1, [])
    assert harness.rows("SELECT count(*) FROM events WHERE event = 'purchase'") == [(2,)]
    assert list_letters(harness.service.database) == []


def test_warn_mode_accepts_and_flags(harness: Harness) -> None:
    harness.service.plans.save(json.dumps({**PLAN, "mode": "warn", "unplanned_events": "warn"}), "shop.json")
    harness.post("/v1/batch", {"batch": [track("purchase", properties={}), track("mystery")]})
    harness.drain()
    assert harness.rows("SELECT count(*) FROM events") == [(2,)]
    warnings = sorted(harness.rows("SELECT event, field, reason FROM plan_warnings"))
    assert warnings[0][:2] == ("mystery", "$.event")
    assert warnings[1][:2] == ("purchase", "$.properties")
    assert "'revenue' is a required property" in warnings[1][2]


def test_plans_can_cover_some_sources_only(harness: Harness) -> None:
    harness.service.plans.save(json.dumps({**PLAN, "sources": ["ios"]}), "shop.json")
    harness.post("/v1/batch", {"batch": [track("purchase")]})  # source "web": not covered
    harness.drain()
    assert harness.rows("SELECT count(*) FROM events") == [(1,)]


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        ({"name": "p", "events": {"x": {"type": "nonsense"}}}, "not valid JSON Schema"),
        ({"name": "p", "mode": "strict", "events": {}}, "mode one of allow, warn, block"),
        ({"events": {}}, "needs 'name'"),
        ({"name": "../evil", "events": {}}, "use 1-64 letters"),
    ],
)
def test_bad_plans_are_refused_with_the_part_at_fault(harness: Harness, plan: dict[str, Any], words: str) -> None:
    from footfall.intake.plans import PlanError

    with pytest.raises(PlanError, match=words):
        PlanBook(harness.data_dir).save(json.dumps(plan), "plan.json")


def test_dead_letter_routes_need_a_secret_key(harness: Harness) -> None:
    harness.post("/v1/track", {"event": "x"})  # no ids: dead-lettered
    harness.drain()
    assert harness.client.get("/v1/admin/dead-letters", headers={"Authorization": f"Bearer {harness.write_key}"}).status_code == 401
    listed = harness.client.get("/v1/admin/dead-letters", headers={"Authorization": f"Bearer {harness.secret_key}"})
    (letter,) = listed.json()["dead_letters"]
    assert letter["reason"] == "needs an anonymousId or a userId (or both)"
    replayed = harness.client.post(
        "/v1/admin/dead-letters/replay", json={"ids": [letter["id"]]}, headers={"Authorization": f"Bearer {harness.secret_key}"}
    )
    assert replayed.json()["still_failing"][0]["id"] == letter["id"]


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_count_what_happened(harness: Harness) -> None:
    harness.post("/v1/batch", {"batch": [track(), {"type": "track", "anonymousId": "a"}]})
    harness.client.post("/v1/batch", content=b"{}")
    before = _metrics(harness)
    assert before["footfall_intake_lag_records"] == 1
    harness.drain()
    after = _metrics(harness)
    assert after["footfall_messages_accepted_total"] == 1
    assert after["footfall_messages_rejected_total"] == 1
    assert after["footfall_events_stored_total"] == 1
    assert after["footfall_dead_lettered_total"] == 1
    assert after['footfall_collector_requests_total{status="401"}'] == 1
    assert after["footfall_intake_lag_records"] == 0


def _metrics(harness: Harness) -> dict[str, float]:
    text = harness.client.get("/metrics").text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_a_plan_written_by_another_process_is_picked_up(harness: Harness) -> None:
    harness.service.plans.refresh_every = 0.0  # the server looks again at most this often (1 s by default)
    assert harness.service.plans.plans() == []
    PlanBook(harness.data_dir).save(json.dumps(PLAN), "shop.json")  # as `footfall plans set` does
    assert [compiled.plan.name for compiled in harness.service.plans.plans()] == ["shop"]
    (harness.data_dir / "plans" / "broken.json").write_text("{")
    assert [compiled.plan.name for compiled in harness.service.plans.plans()] == ["shop"]
    assert "not valid JSON" in (harness.service.plans.load_error or "")
