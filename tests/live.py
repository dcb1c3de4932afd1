"""A real ``footfall serve`` process on 127.0.0.1, for tests that need one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from footfall.keys import KeyStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    write_key: str = ""
    secret_key: str = ""
    serve_args: tuple[str, ...] = ()  # more options for `footfall serve`, e.g. ("--demo-site",)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def make_keys(self) -> None:
        store = KeyStore(self.data_dir)
        self.write_key, _ = store.create("write", "test")
        self.secret_key, _ = store.create("secret", "admin")

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "server.log"
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "footfall", "--data-dir", str(self.data_dir), "serve", "--port", str(self.port),
                 "--log-level", "warning", *self.serve_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise RuntimeError(f"server did not come up in {timeout} s:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        """A graceful stop (SIGTERM): the worker drains the log."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def sql(self, query: str) -> list[list[Any]]:
        """Rows of a read query, through the server's API with the secret key."""
        request = urllib.request.Request(
            f"{self.url}/v1/sql",
            data=json.dumps({"sql": query}).encode(),
            headers={"Authorization": f"Bearer {self.secret_key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            rows: list[list[Any]] = json.loads(response.read())["rows"]
            return rows

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def wait_until_stored(self, timeout: float = 30.0) -> None:
        """Until the intake log has no records the worker has not stored."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.metric("footfall_intake_lag_records") == 0:
                return
            time.sleep(0.05)
        raise TimeoutError("the intake worker did not catch up")


@contextmanager
def running(data_dir: Path, *serve_args: str, demo_site: bool = False) -> Iterator[LiveServer]:
    """A started server with a write key and a secret key, stopped afterwards.
    With ``demo_site``, it serves the demo shop with its write key."""
    live = LiveServer(data_dir)
    live.make_keys()
    live.serve_args = (*serve_args, *(("--demo-site", "--demo-write-key", live.write_key) if demo_site else ()))
    live.start()
    try:
        yield live
    finally:
        live.stop()


def quoted(values: list[str]) -> str:
    """SQL string literals, comma-separated."""
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


def stored_events(server: LiveServer, event_ids: list[str], columns: list[str]) -> dict[str, dict[str, Any]]:
    """The stored events with these ids, by id; fails if one is stored twice."""
    rows = server.sql(f"SELECT {', '.join(['event_id', *columns])} FROM events WHERE event_id IN ({quoted(event_ids)})")
    by_id: dict[str, dict[str, Any]] = {}
    for row in rows:
        assert row[0] not in by_id, f"event {row[0]} is stored more than once"
        by_id[row[0]] = dict(zip(["event_id", *columns], row, strict=True))
    return by_id


def person_of(server: LiveServer, kind: str, value: str) -> str:
    """The person an identity (``anonymous_id`` or ``user_id``) resolves to."""
    [[person]] = server.sql(f"SELECT person_id FROM identities WHERE kind = '{kind}' AND value = {quoted([value])}")
    return str(person)
