"""The server's read API, and reading a store that a running server holds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from footfall.api.app import create_app
from footfall.pipeline import Pipeline
from footfall.store.database import Database

from .timeline import track


@pytest.fixture
def client(database: Database) -> TestClient:
    Pipeline(database).ingest_events([track("view", "0s", anon="a"), track("buy", "1m", anon="a")])
    return TestClient(create_app(database, "secret-token"))


AUTH = {"Authorization": "Bearer secret-token"}


def test_health_names_the_store(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["dialect"] in ("duckdb", "clickhouse")


def test_sql_needs_the_token(client: TestClient) -> None:
    response = client.post("/v1/sql", json={"sql": "SELECT 1"}, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorised"


def test_sql_answers_reads_and_refuses_writes(client: TestClient) -> None:
    answer = client.post("/v1/sql", json={"sql": "SELECT event FROM events ORDER BY event"}, headers=AUTH).json()
    assert answer == {"columns": ["event"], "rows": [["buy"], ["view"]]}
    refused = client.post("/v1/sql", json={"sql": "DELETE FROM events"}, headers=AUTH)
    assert refused.status_code == 400
    assert "only read queries" in refused.json()["error"]["message"]


@pytest.mark.parametrize("body", [b"not json", b'{"query": "SELECT 1"}', b'{"sql": 5}'])
def test_sql_bad_request_bodies(client: TestClient, body: bytes) -> None:
    response = client.post("/v1/sql", content=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _footfall(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "footfall", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.slow
def test_read_commands_work_while_serve_holds_the_store(tmp_path: Path) -> None:
    with Database.open(tmp_path) as database:
        Pipeline(database).ingest_events([track("view", "0s", anon="a"), track("view", "1m", anon="b")])
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "footfall", "--data-dir", str(tmp_path), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    if json.loads(response.read())["status"] == "ok":
                        break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("footfall serve did not come up")
        assert oct((tmp_path / "server.json").stat().st_mode & 0o777) == "0o600"

        result = _footfall("sql", "SELECT count(*) AS n FROM events", "--json", data_dir=tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"n": 2}
        info = _footfall("info", data_dir=tmp_path)
        assert info.returncode == 0, info.stderr
        assert "via footfall serve" in info.stdout
        assert "lock" not in (info.stdout + info.stderr).lower()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not (tmp_path / "server.json").exists()


def test_locked_store_without_a_server_is_explained(tmp_path: Path) -> None:
    Database.open(tmp_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"from footfall.store.database import Database; import time; db = Database.open({str(tmp_path)!r});"
         " print('open', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        result = _footfall("sql", "SELECT 1", data_dir=tmp_path)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1
        assert "No running `footfall serve`" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
