"""The collector's CLI: keys, tracking plans and the dead-letter store, with the
store closed and through a running server."""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path

import pytest

from footfall.api.service import Service
from footfall.config import init_data_dir
from footfall.keys import KeyStore

from .live import LiveServer
from .test_cli import run

PLAN = Path(__file__).resolve().parent.parent / "docs" / "examples" / "shop-plan.json"


def test_keys_create_list_revoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, err = run(capsys, "--data-dir", str(tmp_path), "keys", "create", "--source", "web", "--anonymize-ip")
    assert status == 0
    key = out.strip()
    assert key.startswith("ffw_")
    assert "not shown again" in err
    record = KeyStore(tmp_path).authenticate(key, "write")
    assert record is not None
    assert record.anonymize_ip

    status, out, _ = run(capsys, "--data-dir", str(tmp_path), "keys", "list")
    assert record.id in out
    assert "anonymised" in out
    assert key not in out

    assert run(capsys, "--data-dir", str(tmp_path), "keys", "revoke", record.id)[0] == 0
    assert KeyStore(tmp_path).authenticate(key, "write") is None
    status, _, err = run(capsys, "--data-dir", str(tmp_path), "keys", "revoke", record.id)
    assert status == 2
    assert "already revoked" in err
    status, _, err = run(capsys, "--data-dir", str(tmp_path), "keys", "create", "--source", "no spaces please")
    assert status == 2
    assert "use 1-64 letters" in err


def test_plans_set_list_remove(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = run(capsys, "--data-dir", str(tmp_path), "plans", "set", str(PLAN))
    assert status == 0
    assert "'shop' (block, 2 events) is in force" in out
    status, out, _ = run(capsys, "--data-dir", str(tmp_path), "plans", "list")
    assert "add_to_cart, purchase" in out
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x", "events": {"e": {"type": 12}}}')
    status, _, err = run(capsys, "--data-dir", str(tmp_path), "plans", "set", str(broken))
    assert status == 2
    assert "not valid JSON Schema" in err
    assert run(capsys, "--data-dir", str(tmp_path), "plans", "remove", "shop")[0] == 0
    status, _, err = run(capsys, "--data-dir", str(tmp_path), "plans", "remove", "shop")
    assert status == 2
    assert "no tracking plan named 'shop'" in err


def test_dlq_list_show_replay_without_a_server(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run(capsys, "--data-dir", str(tmp_path), "plans", "set", str(PLAN))
    _store_blocked_purchase(tmp_path)

    status, out, _ = run(capsys, "--data-dir", str(tmp_path), "dlq", "list", "--json")
    assert status == 0
    (letter,) = [json.loads(line) for line in out.splitlines()]
    assert letter["field"] == "$.properties.revenue"
    status, out, _ = run(capsys, "--data-dir", str(tmp_path), "dlq", "show", letter["id"])
    assert '"revenue": "12.50"' in out

    status, out, err = run(capsys, "--data-dir", str(tmp_path), "dlq", "replay", "--all")
    assert "replayed 0 letters" in out
    assert "1 still failing" in err
    run(capsys, "--data-dir", str(tmp_path), "plans", "remove", "shop")
    status, out, _ = run(capsys, "--data-dir", str(tmp_path), "dlq", "replay", letter["id"])
    assert "replayed 1 letters (1 events stored)" in out
    status, out, _ = run(capsys, "--data-dir", str(tmp_path), "sql", "--json", "SELECT event FROM events")
    assert json.loads(out) == {"event": "purchase"}
    status, _, err = run(capsys, "--data-dir", str(tmp_path), "dlq", "replay")
    assert status == 2
    assert "--all" in err


def _store_blocked_purchase(data_dir: Path) -> None:
    init_data_dir(data_dir)
    with Service(data_dir, fsync=False, start_worker=False) as service:
        key, _ = service.keys.create("write", "web")
        from starlette.testclient import TestClient

        from footfall.api.app import create_app

        client = TestClient(create_app(service.database, "token", service=service))
        body = {"batch": [{"type": "track", "event": "purchase", "anonymousId": "a", "properties": {"revenue": "12.50"}}]}
        auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        assert client.post("/v1/batch", json=body, headers={"Authorization": auth}).status_code == 200
        # closing the service drains the log into the store


def test_dlq_goes_through_a_running_server(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    server = LiveServer(tmp_path)
    server.make_keys()
    run(capsys, "--data-dir", str(tmp_path), "plans", "set", str(PLAN))
    server.start()
    try:
        body = json.dumps({"batch": [{"type": "track", "event": "purchase", "anonymousId": "a", "properties": {}}]})
        request = urllib.request.Request(
            f"{server.url}/v1/batch", data=body.encode(),
            headers={"Authorization": "Basic " + base64.b64encode(f"{server.write_key}:".encode()).decode()},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        server.wait_until_stored()
        status, out, _ = run(capsys, "--data-dir", str(tmp_path), "dlq", "list", "--json")
        assert status == 0
        assert "'revenue' is a required property" in json.loads(out)["reason"]
        run(capsys, "--data-dir", str(tmp_path), "plans", "remove", "shop")
        status, out, _ = run(capsys, "--data-dir", str(tmp_path), "dlq", "replay", "--all")
        assert "replayed 1 letters (1 events stored)" in out
        assert server.sql("SELECT event FROM events") == [["purchase"]]
    finally:
        server.stop()
