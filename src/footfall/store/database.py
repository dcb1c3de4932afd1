"""The Database: the one owner of the store's connections, writer and schema.

Everything that touches the event store goes through it. It opens the backend
the project's config names, runs pending migrations, serialises writes through
one writer, and offers read queries that cannot change anything.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from footfall.config import ProjectConfig, load_config, resolve_data_dir
from footfall.errors import StoreError
from footfall.store.backend import Backend, QueryResult
from footfall.store.clickhouse_backend import ClickHouseBackend
from footfall.store.duckdb_backend import DuckDBBackend
from footfall.store.schema import (
    COHORT_MEMBERS,
    DEAD_LETTERS,
    EVENTS,
    IDENTITIES,
    MIGRATIONS,
    PAGE_EVENTS,
    PERSON_MERGES,
    PERSONS,
    SCHEMA_VERSION,
    TABLES,
)

DUCKDB_FILE = "footfall.duckdb"

_READ_STATEMENTS = ("SELECT", "WITH", "EXPLAIN", "DESCRIBE", "DESC", "SHOW", "EXISTS")


class DeadLetter(NamedTuple):
    field: str  # JSON path or column at fault, "$" for the whole message
    reason: str
    payload: str  # the raw message or row, as received
    # A stable id makes a repeated write (a replayed intake record) replace
    # rather than duplicate the letter; None draws a fresh one.
    id: str | None = None
    received_at: datetime | None = None


class Summary(NamedTuple):
    events: int
    persons: int
    sessions: int
    first_event: datetime | None
    last_event: datetime | None
    top_events: list[tuple[str, int]]
    dead_letters: int


class Database:
    """Owns one backend for one project.

    Use ``Database.open(data_dir)`` for the configured store, or pass a backend
    directly (tests do, to run one body against every engine).
    """

    def __init__(self, backend: Backend, config: ProjectConfig | None = None) -> None:
        self.backend = backend
        self.config = config or ProjectConfig()
        self.project_id = self.config.project_id
        self._writer = threading.RLock()

    @classmethod
    def open(
        cls,
        data_dir: str | Path | None = None,
        *,
        read_only: bool = False,
        config: ProjectConfig | None = None,
    ) -> Database:
        directory = resolve_data_dir(data_dir)
        if read_only and not directory.exists():
            raise StoreError(
                f"no Footfall data directory at {directory}: run `footfall demo` or `footfall import` first,"
                " or point --data-dir / FOOTFALL_DATA_DIR at one"
            )
        config = config or load_config(directory)
        backend: Backend
        if config.store.backend == "clickhouse":
            backend = ClickHouseBackend(config.store.clickhouse_dsn)
        else:
            path = directory / DUCKDB_FILE
            if read_only and not path.exists():
                raise StoreError(f"no event store at {path}: load some events first (`footfall demo` or `footfall import`)")
            directory.mkdir(parents=True, exist_ok=True)
            backend = DuckDBBackend(path, read_only=read_only)
        database = cls(backend, config)
        if read_only:
            database.check_schema()
        else:
            database.migrate()
        return database

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------

    def schema_version(self) -> int:
        try:
            rows = self.backend.query("SELECT max(version) FROM schema_version").rows
        except Exception:
            return 0
        return int(rows[0][0] or 0) if rows else 0

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version now in place."""
        with self._writer:
            ddl = {
                "duckdb": "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
                "clickhouse": "CREATE TABLE IF NOT EXISTS schema_version (version Int32, applied_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY version",
            }
            self.backend.execute(ddl[self.backend.dialect])
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the store is at schema version {current}, newer than this Footfall ({SCHEMA_VERSION}); upgrade Footfall"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                with self.backend.transaction():  # each version whole, where the engine can
                    for statement in MIGRATIONS[version - 1][self.backend.dialect]:
                        self.backend.execute(statement)
                    self.backend.execute(f"INSERT INTO schema_version VALUES ({version}, {self._literal_now()})")
            return SCHEMA_VERSION

    def check_schema(self) -> None:
        version = self.schema_version()
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"the store is at schema version {version}, this Footfall expects {SCHEMA_VERSION};"
                " open it once for writing (e.g. `footfall info`) to migrate"
            )

    def _literal_now(self) -> str:
        return self._literal_time(datetime.now(UTC))

    # -- writes (one writer) ----------------------------------------------

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Hold the single writer for a group of writes that land together (where
        the engine has transactions)."""
        with self._writer, self.backend.transaction():
            yield

    def save_identities(self, identities: Sequence[tuple[str, str, str]]) -> None:
        """Upsert ``(kind, value, person_id)`` links."""
        if not identities:
            return
        now = pa.array([datetime.now(UTC)] * len(identities), IDENTITIES.schema.field("updated_at").type)
        kinds, values, persons = (list(column) for column in zip(*identities, strict=True))
        table = pa.table(
            {"project_id": [self.project_id] * len(identities), "kind": kinds, "value": values, "person_id": persons, "updated_at": now},
            schema=IDENTITIES.schema,
        )
        self.upsert(IDENTITIES.name, table)

    def merge_persons(self, merges: Sequence[tuple[str, str]], stored: Collection[str] | None = None) -> None:
        """Record ``(old, new)`` person merges and move the old persons' stored events.

        ``stored`` names the old persons that have anything in the store (None:
        assume all do). A person created and merged within one batch has
        nothing stored to move, which spares a rewrite of the events table.
        """
        if not merges:
            return
        self.reassign_persons(merges, stored)
        now = pa.array([datetime.now(UTC)] * len(merges), PERSON_MERGES.schema.field("merged_at").type)
        olds, news = (list(column) for column in zip(*merges, strict=True))
        table = pa.table(
            {"project_id": [self.project_id] * len(merges), "old_person_id": olds, "new_person_id": news, "merged_at": now},
            schema=PERSON_MERGES.schema,
        )
        self.insert(PERSON_MERGES.name, table)

    def insert(self, table: str, data: pa.Table) -> None:
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}")
        with self._writer:
            self.backend.insert_arrow(table, data)

    def upsert(self, table: str, data: pa.Table) -> None:
        """Insert rows, replacing stored rows with the same key; within ``data``
        the last row for a key wins."""
        spec = TABLES[table]
        if not spec.key:
            raise StoreError(f"table {table!r} has no key to upsert by")
        if data.num_rows > 1:
            positions = pa.table({**{column: data[column] for column in spec.key}, "_row": pa.array(range(data.num_rows))})
            last = positions.group_by(list(spec.key), use_threads=False).aggregate([("_row", "max")])["_row_max"]
            if len(last) < data.num_rows:
                data = data.take(pc.take(last, pc.sort_indices(last)))
        with self._writer:
            self.backend.upsert_arrow(table, data, spec.key)

    def reassign_persons(self, merges: Sequence[tuple[str, str]], stored: Collection[str] | None = None) -> None:
        """Move stored events and drop person rows of persons merged into others
        (only those in ``stored``, when given)."""
        merges = [(old, new) for old, new in _final_targets(merges) if stored is None or old in stored]
        if not merges:
            return
        project = self.backend.quote(self.project_id)
        olds = ", ".join(self.backend.quote(old) for old, _ in merges)
        with self._writer:
            # Cohort snapshots follow their persons too.
            for table in ("events", COHORT_MEMBERS.name):
                self._move_rows(table, merges, project, olds)
            self.backend.execute(
                f"DELETE FROM persons WHERE project_id = {project} AND person_id IN ({olds})"
            )

    def _move_rows(self, table: str, merges: list[tuple[str, str]], project: str, olds: str) -> None:
        if self.backend.dialect == "duckdb":
            cases = " ".join(f"WHEN {self.backend.quote(old)} THEN {self.backend.quote(new)}" for old, new in merges)
            self.backend.execute(
                f"UPDATE {table} SET person_id = CASE person_id {cases} END"
                f" WHERE project_id = {project} AND person_id IN ({olds})"
            )
            return
        # person_id is part of the sorting key, which ClickHouse cannot update
        # in place: copy the rows under the new id, then delete. (The copy goes
        # through Arrow: the embedded engine's INSERT ... SELECT from the same
        # table with a key filter inserts nothing.)
        moved = self.backend.query_arrow(f"SELECT * FROM {table} WHERE project_id = {project} AND person_id IN ({olds})")
        if moved.num_rows:
            mapping = dict(merges)
            new_ids = pa.array([mapping[old] for old in moved["person_id"].to_pylist()], pa.string())
            moved = moved.set_column(moved.schema.get_field_index("person_id"), "person_id", new_ids)
            self.backend.insert_arrow(table, moved)
        self.backend.execute(f"DELETE FROM {table} WHERE project_id = {project} AND person_id IN ({olds})")
        if table == EVENTS.name:  # the view copied the moved page events; their old rows go too
            self.backend.execute(f"DELETE FROM {PAGE_EVENTS.name} WHERE project_id = {project} AND person_id IN ({olds})")

    def dead_letter(self, source: str, letters: Sequence[DeadLetter]) -> int:
        """Keep messages that could not be accepted, with why, for a later fix and replay."""
        if not letters:
            return 0
        now = datetime.now(UTC)
        table = pa.table(
            {
                "id": [letter.id or str(uuid.uuid4()) for letter in letters],
                "project_id": [self.project_id] * len(letters),
                "received_at": pa.array(
                    [letter.received_at or now for letter in letters], DEAD_LETTERS.schema.field("received_at").type
                ),
                "source": [source] * len(letters),
                "field": [letter.field for letter in letters],
                "reason": [letter.reason for letter in letters],
                "payload": [letter.payload for letter in letters],
            },
            schema=DEAD_LETTERS.schema,
        )
        self.upsert(DEAD_LETTERS.name, table)
        return len(letters)

    def delete_dead_letters(self, ids: Sequence[str]) -> None:
        """Remove letters that were replayed into the store."""
        if not ids:
            return
        quoted = ", ".join(self.backend.quote(letter_id) for letter_id in ids)
        with self._writer:
            self.backend.execute(
                f"DELETE FROM {DEAD_LETTERS.name} WHERE project_id = {self.backend.quote(self.project_id)}"
                f" AND id IN ({quoted})"
            )

    # -- reads ---------------------------------------------------------------

    def query(self, sql: str) -> QueryResult:
        return self.backend.query(sql)

    def query_arrow(self, sql: str) -> pa.Table:
        return self.backend.query_arrow(sql)

    def _read_statement(self, sql: str) -> str:
        """The statement, if it is a single read; otherwise a StoreError saying why not.

        DuckDB classifies statements itself (a ``WITH ... DELETE`` is a DELETE);
        ClickHouse also runs user queries with ``readonly`` set, so the engine
        refuses writes whatever the text looks like.
        """
        statement = sql.strip().rstrip(";").strip()
        if not statement:
            raise StoreError("empty query: give a SELECT statement")
        refusal = "only read queries are allowed here (SELECT, WITH ... SELECT, DESCRIBE, SHOW, EXPLAIN); got "
        if self.backend.dialect == "duckdb":
            import duckdb

            try:
                parsed = duckdb.extract_statements(statement)
            except duckdb.Error as exc:
                raise StoreError(f"query failed: {_first_line(exc)}") from None
            if len(parsed) != 1:
                raise StoreError("one statement at a time, please")
            kind = parsed[0].type
            if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
                raise StoreError(refusal + kind.name)
        else:
            # The ClickHouse clients cannot run several statements in one call
            # (the embedded one loses its stream state), so refuse them here.
            if ";" in statement:
                raise StoreError("one statement at a time, please (remove the ';')")
            if not statement.lstrip("(").split(None, 1)[0].upper().startswith(_READ_STATEMENTS):
                raise StoreError(refusal + repr(statement.split(None, 1)[0]))
        return statement

    def read_only_query(self, sql: str) -> QueryResult:
        """Run a user's SQL, refusing anything but a single read statement."""
        statement = self._read_statement(sql)
        try:
            return self.backend.query(statement, read_only=True)
        except Exception as exc:
            raise StoreError(f"query failed: {_first_line(exc)}") from None

    def read_only_query_arrow(self, sql: str) -> pa.Table:
        """``read_only_query`` with the answer as an Arrow table (types preserved)."""
        statement = self._read_statement(sql)
        try:
            return self.backend.query_arrow(statement, read_only=True)
        except Exception as exc:
            raise StoreError(f"query failed: {_first_line(exc)}") from None

    def stored_event_ids(
        self, event_ids: pa.Array, since: datetime, until: datetime
    ) -> set[str]:
        """Which of these event ids are already stored, among events timed in
        [since, until].

        The bounds keep the lookup to a slice of the table (both engines prune
        by them); a retry carries the same event time.
        """
        if len(event_ids) == 0:
            return set()
        project = self.backend.quote(self.project_id)
        bounds = f"timestamp BETWEEN {self._literal_time(since)} AND {self._literal_time(until)}"
        rows = self.backend.query(
            f"SELECT event_id FROM events WHERE project_id = {project} AND {bounds}"
            " AND event_id IN (SELECT event_id FROM candidate_ids)",
            tables={"candidate_ids": pa.table({"event_id": event_ids.cast(pa.string())})},
        ).rows
        return {str(row[0]) for row in rows}

    def event_ids_since(self, since: datetime) -> pa.Array:
        """The ids of stored events timed at or after ``since``."""
        table = self.backend.query_arrow(
            f"SELECT event_id FROM events WHERE project_id = {self.backend.quote(self.project_id)}"
            f" AND timestamp >= {self._literal_time(since)}"
        )
        return table.column("event_id").combine_chunks() if table.num_rows else pa.array([], pa.string())

    def _literal_time(self, value: datetime) -> str:
        text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        if self.backend.dialect == "clickhouse":
            return f"toDateTime64('{text}', 3, 'UTC')"
        return f"TIMESTAMPTZ '{text}+00'"

    def identity_rows(self) -> list[tuple[str, str, str]]:
        table = self.backend.final(IDENTITIES.name)
        return [
            (str(kind), str(value), str(person))
            for kind, value, person in self.backend.query(
                f"SELECT kind, value, person_id FROM {table} WHERE project_id = {self.backend.quote(self.project_id)}"
            ).rows
        ]

    def persons_arrow(self, person_ids: Sequence[str] | None = None) -> pa.Table:
        where = f"project_id = {self.backend.quote(self.project_id)}"
        if person_ids is not None:
            if not person_ids:
                return PERSONS.schema.empty_table()
            where += " AND person_id IN (" + ", ".join(self.backend.quote(p) for p in person_ids) + ")"
        return self.backend.query_arrow(f"SELECT * FROM {self.backend.final(PERSONS.name)} WHERE {where}")

    def summary(self, top: int = 10) -> Summary:
        project = self.backend.quote(self.project_id)
        events, persons, sessions, first, last = self.backend.query(
            "SELECT count(*), count(DISTINCT person_id), count(DISTINCT session_id), min(timestamp), max(timestamp)"
            f" FROM events WHERE project_id = {project}"
        ).rows[0]
        top_events = self.backend.query(
            f"SELECT event, count(*) AS n FROM events WHERE project_id = {project}"
            f" GROUP BY event ORDER BY n DESC, event LIMIT {int(top)}"
        ).rows
        dead = self.backend.query(f"SELECT count(*) FROM {self.backend.final(DEAD_LETTERS.name)} WHERE project_id = {project}").rows[0][0]
        return Summary(
            int(events), int(persons), int(sessions),
            first if events else None, last if events else None,
            [(str(name), int(n)) for name, n in top_events], int(dead),
        )


def _final_targets(merges: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Collapse chains (a into b, then b into c) so every old id maps to its last target.

    >>> _final_targets([("a", "b"), ("b", "c")])
    [('a', 'c'), ('b', 'c')]
    """
    target = dict(merges)
    resolved = []
    for old in target:
        new, seen = target[old], {old}
        while new in target and new not in seen:
            seen.add(new)
            new = target[new]
        resolved.append((old, new))
    return resolved


def _first_line(exc: BaseException) -> Any:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
