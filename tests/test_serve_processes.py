"""``footfall serve`` runs two processes: the collector in front and the store
behind it. Collection must not depend on the store being up."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from .live import LiveServer


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _send(server: LiveServer, message_id: str) -> int:
    body = json.dumps({"batch": [{"type": "track", "event": "viewed", "anonymousId": "a", "messageId": message_id}]})
    request = urllib.request.Request(
        f"{server.url}/v1/batch", data=body.encode(),
        headers={"Authorization": "Basic " + base64.b64encode(f"{server.write_key}:".encode()).decode()},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_the_store_process_dies_alone_collection_goes_on_and_it_comes_back(tmp_path: Path) -> None:
    server = LiveServer(tmp_path)
    server.make_keys()
    server.start()
    try:
        assert server.process is not None
        (store,) = _children(server.process.pid)
        assert _send(server, "before") == 200
        server.wait_until_stored()

        os.kill(store, signal.SIGKILL)
        time.sleep(0.2)
        assert _send(server, "while-down") == 200  # acknowledged: it is in the log
        try:
            server.sql("SELECT 1")
            reads_while_down = 200
        except urllib.error.HTTPError as error:
            reads_while_down = error.code
            assert json.loads(error.read())["error"]["code"] == "store_unavailable"

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if server.sql("SELECT count(*) FROM events WHERE event_id = 'while-down'") == [[1]]:
                    break
            except urllib.error.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("the store process did not come back and store the event")
        with urllib.request.urlopen(f"{server.url}/health", timeout=10) as response:
            health = json.loads(response.read())
        assert health["store_restarts"] == 1
        assert reads_while_down in (200, 503)  # 200 only if the restart won the race
        assert _children(server.process.pid) != [store]
    finally:
        server.stop()


def test_the_store_process_dies_with_the_server(tmp_path: Path) -> None:
    server = LiveServer(tmp_path)
    server.make_keys()
    server.start()
    assert server.process is not None
    (store,) = _children(server.process.pid)
    server.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(store, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("the store process outlived the server")
