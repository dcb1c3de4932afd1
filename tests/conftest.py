"""Shared fixtures: one test body runs against every store backend."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from footfall.store.clickhouse_backend import ClickHouseBackend
from footfall.store.database import Database
from footfall.store.duckdb_backend import DuckDBBackend


@pytest.fixture(scope="session")
def chdb_dsn() -> Iterator[str]:
    """The in-process ClickHouse engine allows one data path per process; tests
    share it and keep apart by database."""
    path = Path(tempfile.gettempdir()) / f"footfall-chdb-tests-{os.getpid()}"
    yield f"chdb://{path}"
    shutil.rmtree(path, ignore_errors=True)


def make_clickhouse_database(chdb_dsn: str) -> Database:
    backend = ClickHouseBackend(chdb_dsn, database=f"test_{uuid.uuid4().hex[:12]}")
    database = Database(backend)
    database.migrate()
    return database


@pytest.fixture(params=["duckdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "duckdb":
        db = Database(DuckDBBackend(tmp_path / "store.duckdb"))
        db.migrate()
    else:
        db = make_clickhouse_database(request.getfixturevalue("chdb_dsn"))
    yield db
    if request.param == "clickhouse":
        db.backend.execute(f"DROP DATABASE IF EXISTS `{db.backend.database}`")  # type: ignore[attr-defined]
    db.close()
