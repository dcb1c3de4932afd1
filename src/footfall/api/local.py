"""Finding and using a running ``footfall serve`` from another process.

While the server holds the embedded store open for writing, no other process
can open it. The server leaves ``server.json`` in the data directory (readable
only by its owner) with its address and an admin token, so the CLI can send
read queries through it instead of failing on the file lock.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa

from footfall.api.app import ARROW_STREAM
from footfall.config import load_config
from footfall.errors import StoreError, StoreLockedError
from footfall.intake.dead_letters import ReplayReport, StoredLetter, list_letters, replay
from footfall.intake.plans import PlanBook
from footfall.pipeline import Pipeline
from footfall.store.backend import QueryResult
from footfall.store.database import Database
from footfall.store.dialects import final_table, quote_literal

SERVER_FILE = "server.json"


class ServerInfo(NamedTuple):
    pid: int
    url: str
    token: str


def publish(data_dir: Path, url: str, token: str | None = None) -> ServerInfo:
    """Write server.json for this process; returns the info including the token
    (a fresh one unless given)."""
    info = ServerInfo(os.getpid(), url, token or secrets.token_urlsafe(32))
    path = data_dir / SERVER_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(info._asdict(), handle)
    return info


def withdraw(data_dir: Path) -> None:
    path = data_dir / SERVER_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def running_server(data_dir: Path) -> ServerInfo | None:
    """The live server for a data directory, if one announced itself and still runs."""
    try:
        raw = json.loads((data_dir / SERVER_FILE).read_text())
        info = ServerInfo(int(raw["pid"]), str(raw["url"]), str(raw["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    return info


def remote_arrow(server: ServerInfo, sql: str, timeout: float = 60.0) -> pa.Table:
    """Run a read query on a running server; the answer keeps its column types."""
    request = urllib.request.Request(
        f"{server.url}/v1/sql",
        data=json.dumps({"sql": sql}).encode(),
        headers={
            "Authorization": f"Bearer {server.token}",
            "Content-Type": "application/json",
            "Accept": ARROW_STREAM,
        },
        method="POST",
    )
    return pa.ipc.open_stream(_send(server, request, timeout)).read_all()


def _send(server: ServerInfo, request: urllib.request.Request, timeout: float) -> bytes:
    """The answer's body; the server's error message as a StoreError."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        raise StoreError(message) from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise StoreError(f"the running server at {server.url} did not answer ({exc})") from None


class RemoteBackend:
    """A read-only Backend that sends queries to a running server.

    Lets every read path (``footfall sql``, ``info``, queries) work unchanged
    while another process owns the store.
    """

    def __init__(self, server: ServerInfo, dialect: str) -> None:
        self.server = server
        self.dialect = dialect
        self.description = f"via footfall serve at {server.url} (pid {server.pid})"

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise StoreError("this connection goes through a running server and is read-only")

    execute = insert_arrow = upsert_arrow = _refuse

    def transaction(self) -> AbstractContextManager[None]:
        raise StoreError("this connection goes through a running server and is read-only")

    def query(self, sql: str, *, read_only: bool = True, tables: Mapping[str, pa.Table] | None = None) -> QueryResult:
        if tables:
            raise StoreError("queries with attached tables cannot go through the server")
        table = self.query_arrow(sql)
        return QueryResult(table.column_names, [tuple(row.values()) for row in table.to_pylist()])

    def query_arrow(self, sql: str, *, read_only: bool = True) -> pa.Table:
        return remote_arrow(self.server, sql)

    def final(self, table: str) -> str:
        return final_table(self.dialect, table)

    def quote(self, value: str) -> str:
        return quote_literal(self.dialect, value)

    def close(self) -> None:
        pass


def server_dialect(server: ServerInfo) -> str:
    try:
        with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
            return str(json.loads(response.read())["dialect"])
    except (urllib.error.URLError, TimeoutError, ValueError, KeyError) as exc:
        raise StoreError(f"the running server at {server.url} did not answer ({exc})") from None


def open_reader(data_dir: Path) -> Database:
    """A Database for reading: the store itself, or a running server that holds it."""
    try:
        return Database.open(data_dir, read_only=True)
    except StoreLockedError as locked:
        server = running_server(data_dir)
        if server is None:
            raise StoreLockedError(
                f"{locked} No running `footfall serve` announced itself in {data_dir};"
                " wait for the other process to finish, or start `footfall serve` to share the store."
            ) from None
        return Database(RemoteBackend(server, server_dialect(server)), load_config(data_dir))


def call_server(
    server: ServerInfo, path: str, body: object | None = None, timeout: float = 300.0, *, method: str | None = None
) -> Any:
    request = urllib.request.Request(
        f"{server.url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
        method=method or ("GET" if body is None else "POST"),
    )
    return json.loads(_send(server, request, timeout))


class DeadLetterDesk:
    """Dead letters from the CLI: through a running server when one holds the
    store (so a replay shares its pipeline), else straight from the store."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server = running_server(data_dir)
        self._database: Database | None = None

    def _open(self) -> Database:
        if self._database is None:
            self._database = Database.open(self.data_dir)
        return self._database

    def list(
        self, *, limit: int = 50, source: str | None = None, ids: Sequence[str] | None = None
    ) -> list[StoredLetter]:
        if self.server is None:
            return list_letters(self._open(), limit=limit, source=source, ids=ids)
        query = urllib.parse.urlencode(
            [("limit", str(limit))] + ([("source", source)] if source else []) + [("id", i) for i in ids or []]
        )
        rows = call_server(self.server, f"/v1/admin/dead-letters?{query}")["dead_letters"]
        return [
            StoredLetter(**{**row, "received_at": datetime.fromisoformat(row["received_at"])}) for row in rows
        ]

    def replay(self, *, ids: Sequence[str] | None = None, source: str | None = None) -> ReplayReport:
        if self.server is None:
            database = self._open()
            return replay(database, Pipeline(database), PlanBook(self.data_dir), ids=ids, source=source)
        answer = call_server(self.server, "/v1/admin/dead-letters/replay", {"ids": ids, "source": source})
        return ReplayReport(
            answer["replayed"],
            answer["stored_events"],
            [(item["id"], item["field"], item["reason"]) for item in answer["still_failing"]],
        )

    def __enter__(self) -> DeadLetterDesk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._database is not None:
            self._database.close()
