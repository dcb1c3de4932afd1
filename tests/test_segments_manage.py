"""Managing segments and cohorts: ``footfall segments|cohorts ...`` and the
``/v1/segments`` / ``/v1/cohorts`` API, over a store of simulated traffic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from footfall.analytics import funnels
from footfall.analytics.wire import spec_from_json
from footfall.api.app import create_app
from footfall.api.service import Service
from footfall.pipeline import Pipeline
from footfall.segments import run_members
from footfall.segments.catalog import SegmentCatalog
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database

from .test_cli import run
from .timeline import track

FUNNEL = {"steps": [{"event": "view_product"}, {"event": "add_to_cart"}, {"event": "purchase"}], "window": "1d"}


def simulate_into(data_dir: Path) -> None:
    start = (datetime.now(UTC) - timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)
    with Database.open(data_dir) as database:
        pipeline = Pipeline(database)
        for table in Simulation(SimulationSpec(users=200, days=20, seed=3, start=start)).batches(max_rows=5000):
            pipeline.ingest(table)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("shop")
    simulate_into(data_dir)
    return data_dir


@pytest.fixture
def data_dir(shop: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the shop per test: the catalog and cohorts change."""
    copy = tmp_path / "shop"
    copy.mkdir()
    for file in shop.iterdir():
        if file.is_file():
            (copy / file.name).write_bytes(file.read_bytes())
    return copy


def members(data_dir: Path, segment_id: str) -> list[str]:
    catalog = SegmentCatalog(data_dir)
    with Database.open(data_dir, read_only=True) as database:
        segments = catalog.definitions()
        return run_members(database, segments[segment_id].condition, datetime.now(UTC), segments=segments)


def test_segments_are_created_previewed_listed_and_deleted(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    where = ("--data-dir", str(data_dir))
    status, out, _ = run(capsys, *where, "segments", "create", "--template", "active_recent")
    assert status == 0, out
    assert "saved segment 'active_recent'" in out
    status, out, _ = run(capsys, *where, "segments", "create", "--template", "lapsed", "--param", "inactive_for=5d", "--id", "quiet")
    assert status == 0, out

    yaml_file = data_dir / "browsers.yaml"
    yaml_file.write_text(
        "id: browsers\nname: Browsers\ncondition:\n  performed:\n    event: view_product\n    count: {gte: 2}\n    in_last: 14d\n"
    )
    assert run(capsys, *where, "segments", "create", str(yaml_file))[0] == 0
    listed = data_dir / "two.json"
    listed.write_text(json.dumps([
        {"id": "buyers", "condition": {"performed": {"event": "purchase", "in_last": "30d"}}},
        {"id": "active_buyers", "condition": {"and": [{"in_segment": "buyers"}, {"in_segment": "active_recent"}]}},
    ]))
    assert run(capsys, *where, "segments", "create", str(listed))[0] == 0

    status, out, _ = run(capsys, *where, "segments", "list", "--sizes", "--json")
    assert status == 0
    sizes = {item["id"]: item["size"] for item in json.loads(out)}
    assert set(sizes) == {"active_recent", "quiet", "browsers", "buyers", "active_buyers"}
    for segment_id, size in sizes.items():
        assert size == len(members(data_dir, segment_id))
    assert 0 < sizes["active_buyers"] <= min(sizes["buyers"], sizes["active_recent"])

    status, out, _ = run(capsys, *where, "segments", "members", "buyers", "--limit", "0", "--json")
    assert json.loads(out)["members"] == members(data_dir, "buyers")

    status, out, _ = run(capsys, *where, "segments", "overlap", "--json")
    pairs = {(item["segment"], item["other"]): item["both"] for item in json.loads(out)["overlaps"]}
    both = len(set(members(data_dir, "buyers")) & set(members(data_dir, "active_recent")))
    assert pairs.get(("active_recent", "buyers"), pairs.get(("buyers", "active_recent"))) == both

    status, out, _ = run(capsys, *where, "segments", "show", "active_buyers", "--json")
    shown = json.loads(out)
    assert shown["segment"]["condition"] == {"and": [{"in_segment": "buyers"}, {"in_segment": "active_recent"}]}
    assert shown["preview"]["size"] == sizes["active_buyers"]
    assert {item["other"] for item in shown["preview"]["overlaps"]} >= {"buyers", "active_recent"}

    # Deleting a segment another one reads is refused, naming the reader.
    status, _, err = run(capsys, *where, "segments", "delete", "buyers")
    assert status == 2
    assert "read by 'active_buyers'" in err
    assert run(capsys, *where, "segments", "delete", "active_buyers")[0] == 0
    assert run(capsys, *where, "segments", "delete", "buyers")[0] == 0
    status, _, err = run(capsys, *where, "segments", "show", "buyers")
    assert status == 2
    assert "no segment 'buyers'" in err


def test_guard_rails_and_errors(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    where = ("--data-dir", str(data_dir))
    tiny = data_dir / "tiny.json"
    tiny.write_text(json.dumps({"id": "tiny", "condition": {"performed": {"event": "purchase", "in_last": "30d"}}}))
    status, out, err = run(capsys, *where, "segments", "preview", str(tiny), "--json")
    assert status == 0
    [preview] = json.loads(out)
    assert 0 < preview["size"] < 50, "the simulated shop has a handful of buyers"
    assert any("fewer than 50" in warning for warning in preview["warnings"])
    assert SegmentCatalog(data_dir).segments() == [], "preview saves nothing"

    nobody = data_dir / "nobody.json"
    nobody.write_text(json.dumps({"id": "nobody", "condition": {"performed": {"event": "no_such_event", "in_last": "1d"}}}))
    status, out, err = run(capsys, *where, "segments", "create", str(nobody))
    assert status == 0
    assert "no one is in this segment" in err

    status, _, err = run(capsys, *where, "segments", "create", str(nobody))
    assert status == 2
    assert "exists already" in err
    assert "--replace" in err

    bad = data_dir / "bad.json"
    bad.write_text(json.dumps({"id": "bad", "condition": {"performed": {"event": "x", "count": {"almost": 3}}}}))
    status, _, err = run(capsys, *where, "segments", "create", str(bad))
    assert status == 2
    assert "$.condition.performed.count" in err
    bad.write_text(json.dumps({"id": "bad", "condition": {"last_seen": {"within": "3 fortnights"}}}))
    status, _, err = run(capsys, *where, "segments", "create", str(bad))
    assert status == 2
    assert "last_seen.within" in err

    # A cycle through a change of a saved segment names the segments involved.
    loop = data_dir / "loop.json"
    loop.write_text(json.dumps({"id": "a", "condition": {"in_segment": "nobody"}}))
    assert run(capsys, *where, "segments", "create", str(loop))[0] == 0
    loop.write_text(json.dumps({"id": "nobody", "condition": {"in_segment": "a"}}))
    status, _, err = run(capsys, *where, "segments", "create", str(loop), "--replace")
    assert status == 2
    assert "cycle" in err
    assert "nobody" in err
    assert "a" in err
    assert [item.id for item in SegmentCatalog(data_dir).segments()] == ["nobody", "a"], "a refused change saves nothing"


def test_cohorts_from_a_segment_a_funnel_step_and_a_csv(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    where = ("--data-dir", str(data_dir))
    assert run(capsys, *where, "segments", "create", "--template", "active_recent")[0] == 0
    status, out, _ = run(capsys, *where, "cohorts", "create", "march_actives", "--from-segment", "active_recent")
    assert status == 0, out
    status, out, _ = run(capsys, *where, "cohorts", "members", "march_actives", "--limit", "0")
    assert out.split() == members(data_dir, "active_recent")

    spec_file = data_dir / "funnel.json"
    spec_file.write_text(json.dumps(FUNNEL))
    status, out, _ = run(capsys, *where, "cohorts", "create", "carted_no_buy", "--from-funnel", str(spec_file), "--step", "3", "--dropped")
    assert status == 0, out
    with Database.open(data_dir, read_only=True) as database:
        expected = funnels.persons(database, spec_from_json("funnel", FUNNEL), step=2, outcome="dropped")
    assert expected
    assert run(capsys, *where, "cohorts", "members", "carted_no_buy", "--limit", "0")[1].split() == expected

    with Database.open(data_dir, read_only=True) as database:
        users = [row[0] for row in database.query("SELECT DISTINCT user_id FROM events WHERE user_id IS NOT NULL ORDER BY 1 LIMIT 5").rows]
        owners = {row[0] for row in database.query(
            "SELECT DISTINCT person_id FROM identities WHERE kind = 'user' AND value IN ("
            + ", ".join(f"'{user}'" for user in users) + ")"
        ).rows}
    csv_file = data_dir / "vip.csv"
    csv_file.write_text("email,user_id\n" + "".join(f"x@y,{user}\n" for user in users) + "z@y,no-such-user\n")
    status, out, err = run(capsys, *where, "cohorts", "create", "vip", "--csv", str(csv_file), "--name", "VIPs")
    assert status == 0, err
    assert "1 ids matched no stored person" in err
    assert "no-such-user" in err
    assert set(run(capsys, *where, "cohorts", "members", "vip")[1].split()) == owners

    status, out, _ = run(capsys, *where, "cohorts", "list")
    assert "march_actives" in out
    assert "carted_no_buy" in out
    assert "VIPs" in out
    status, _, err = run(capsys, *where, "cohorts", "create", "vip", "--csv", str(csv_file))
    assert status == 2
    assert "exists already" in err
    assert run(capsys, *where, "cohorts", "delete", "vip")[0] == 0
    status, _, err = run(capsys, *where, "cohorts", "members", "vip")
    assert status == 2
    assert "no cohort 'vip'" in err
    with Database.open(data_dir, read_only=True) as database:
        assert database.query("SELECT count(*) FROM cohort_members WHERE cohort_id = 'vip'").rows == [(0,)]


def api(client: TestClient, method: str, path: str, key: str | None, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = client.request(method, path, headers=headers, json=body)
    return response.status_code, response.json()


def test_the_api_manages_segments_and_cohorts(data_dir: Path) -> None:
    service = Service(data_dir, fsync=False, start_worker=False)
    try:
        secret, _ = service.keys.create("secret", "admin")
        write, _ = service.keys.create("write", "web")
        with TestClient(create_app(service.database, "token", service=service)) as client:
            definition = {"id": "buyers", "condition": {"performed": {"event": "purchase", "in_last": "30d"}}}
            assert api(client, "POST", "/v1/segments", None, definition)[0] == 401
            assert api(client, "POST", "/v1/segments", write, definition)[0] == 401

            status, answer = api(client, "POST", "/v1/segments/preview", secret, definition)
            assert status == 200
            assert answer["preview"]["size"] == len(members_of(service, definition))
            assert api(client, "GET", "/v1/segments", secret)[1] == {"segments": []}

            status, answer = api(client, "POST", "/v1/segments", secret, definition)
            assert status == 200
            assert answer["segment"]["id"] == "buyers"
            assert api(client, "POST", "/v1/segments", secret, definition)[0] == 400
            assert api(client, "POST", "/v1/segments?replace=true", secret, definition)[0] == 200

            # With the worker's engine running, overlaps come from its live memberships.
            viewers = {"id": "viewers", "condition": {"performed": {"event": "view_product", "in_last": "30d"}}}
            assert api(client, "POST", "/v1/segments", secret, viewers)[0] == 200
            service.worker.tick()
            assert service.segments.members("buyers") == set(members_of(service, definition))
            status, answer = api(client, "GET", "/v1/segments/overlap", secret)
            both = set(members_of(service, definition)) & set(members_of(service, viewers))
            assert answer["overlaps"][0]["both"] == len(both) > 0
            assert api(client, "DELETE", "/v1/segments/viewers", secret)[0] == 200

            status, answer = api(client, "GET", "/v1/segments/buyers/members?limit=0", secret)
            assert (status, answer["members"]) == (200, members_of(service, definition))
            status, answer = api(client, "GET", "/v1/segments/buyers/members?limit=2", secret)
            assert len(answer["members"]) == 2
            assert answer["size"] > 2

            status, answer = api(client, "POST", "/v1/segments", secret, {"id": "x", "condition": {"sometimes": {}}})
            assert status == 400
            assert answer["error"]["field"] == "$.condition.sometimes"
            assert "unknown condition" in answer["error"]["message"]
            status, answer = api(client, "GET", "/v1/segments/nope", secret)
            assert status == 404
            assert answer["error"]["code"] == "not_found"

            status, answer = api(client, "GET", "/v1/segments/templates", secret)
            assert [item["id"] for item in answer["templates"]][:2] == ["active_recent", "lapsed"]

            status, answer = api(client, "POST", "/v1/cohorts", secret, {"id": "b1", "from": {"segment": "buyers"}})
            assert status == 200, answer
            assert answer["cohort"]["size"] == len(members_of(service, definition))
            status, answer = api(client, "POST", "/v1/cohorts", secret,
                                 {"id": "f1", "from": {"funnel": FUNNEL, "step": 2, "outcome": "converted"}})
            assert status == 200, answer
            status, answer = api(client, "POST", "/v1/cohorts", secret, {"id": "f2", "from": {"funnel": FUNNEL, "step": 9}})
            assert status == 400
            assert answer["error"]["field"] == "step"
            status, answer = api(client, "POST", "/v1/cohorts", secret, {"id": "c1", "from": {"csv": "person_id\nnobody\n"}})
            assert status == 400
            assert "none of the 1 ids" in answer["error"]["message"]
            status, answer = api(client, "POST", "/v1/cohorts", secret, {"id": "Bad Id", "from": {"segment": "buyers"}})
            assert status == 400
            assert answer["error"]["field"] == "id"
            assert [item["id"] for item in api(client, "GET", "/v1/cohorts", secret)[1]["cohorts"]] == ["b1", "f1"]
            status, answer = api(client, "GET", "/v1/cohorts/b1/members?limit=0", secret)
            assert answer["members"] == members_of(service, definition)

            assert api(client, "DELETE", "/v1/cohorts/b1", secret)[0] == 200
            assert api(client, "DELETE", "/v1/segments/buyers", secret)[0] == 200
            assert api(client, "GET", "/v1/segments/buyers", secret)[0] == 404
    finally:
        service.close()


def members_of(service: Service, definition: dict[str, Any]) -> list[str]:
    from footfall.segments import parse_definition

    condition = parse_definition(definition).condition
    return run_members(service.database, condition, datetime.now(UTC))


def test_the_openapi_document_lists_every_segment_and_cohort_route(tmp_path: Path) -> None:
    from footfall.api.openapi import document
    from footfall.api.segments import segment_routes

    with Database.open(tmp_path) as database:
        routes = segment_routes(database, SegmentCatalog(tmp_path), lambda request: True, lambda: None)  # type: ignore[arg-type,return-value]
    paths = document()["paths"]
    for route in routes:
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in paths[route.path], (method, route.path)


def test_cohort_rows_on_both_engines(database: Database, tmp_path: Path) -> None:
    catalog = SegmentCatalog(tmp_path)
    pipeline = Pipeline(database)
    pipeline.ingest_events([track("view", "0s", anon="anon-1"), track("view", "1m", user="u1"), track("view", "2m", anon="anon-2")])
    persons = sorted(row[0] for row in database.query("SELECT person_id FROM persons").rows)
    cohort = catalog.save_cohort(database, "all", [*persons, persons[0]], "test")
    assert cohort.size == 3
    assert catalog.cohort_members(database, "all") == persons
    catalog.save_cohort(database, "all", persons[:1], "again", replace=True)
    assert catalog.cohort_members(database, "all") == persons[:1]
    [[anonymous]] = database.query("SELECT person_id FROM identities WHERE value = 'anon-1'").rows
    catalog.save_cohort(database, "anon", [anonymous], "test")
    pipeline.ingest_events([track("identify", "3m", anon="anon-1", user="u1")])
    [[user]] = database.query("SELECT person_id FROM identities WHERE value = 'u1'").rows
    assert catalog.cohort_members(database, "anon") == [user]
    catalog.delete_cohort(database, "all")
    assert [item.id for item in catalog.cohorts()] == ["anon"]
    assert database.query("SELECT count(*) FROM cohort_members WHERE cohort_id = 'all'").rows[0][0] == 0
