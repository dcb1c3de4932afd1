"""The dead-letter store: list, show and replay messages that were not accepted.

A letter is replayed through the same normalisation the worker applies (the
contract, consent, tracking plans as they are now), with its original
``received_at``. Letters that pass are stored and removed from the table;
letters that still fail stay, and the report says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from footfall.events.record import rows_to_table
from footfall.intake.admission import IntakeBatch
from footfall.intake.plans import PlanBook
from footfall.intake.worker import Unpacked, save_warnings, unpack
from footfall.pipeline import Pipeline
from footfall.store.database import Database
from footfall.store.schema import DEAD_LETTERS


class StoredLetter(NamedTuple):
    id: str
    received_at: datetime
    source: str
    field: str
    reason: str
    payload: str


@dataclass
class ReplayReport:
    replayed: int = 0  # letters that passed and were stored (or were already stored)
    stored_events: int = 0
    still_failing: list[tuple[str, str, str]] = field(default_factory=list)  # (id, field, reason)


def _where(database: Database, ids: Sequence[str] | None, source: str | None) -> str:
    backend = database.backend
    clauses = [f"project_id = {backend.quote(database.project_id)}"]
    if ids is not None:
        clauses.append("id IN (" + ", ".join(backend.quote(i) for i in ids) + ")" if ids else "FALSE")
    if source is not None:
        clauses.append(f"source = {backend.quote(source)}")
    return " AND ".join(clauses)


def list_letters(
    database: Database, *, limit: int = 50, source: str | None = None, ids: Sequence[str] | None = None
) -> list[StoredLetter]:
    """Newest first."""
    backend = database.backend
    rows = backend.query(
        f"SELECT id, received_at, source, field, reason, payload FROM {backend.final(DEAD_LETTERS.name)}"
        f" WHERE {_where(database, ids, source)} ORDER BY received_at DESC, id LIMIT {int(limit)}"
    ).rows
    return [StoredLetter(*row) for row in rows]


def count_letters(database: Database) -> int:
    backend = database.backend
    rows = backend.query(f"SELECT count(*) FROM {backend.final(DEAD_LETTERS.name)} WHERE {_where(database, None, None)}").rows
    return int(rows[0][0])


def replay(
    database: Database,
    pipeline: Pipeline,
    plans: PlanBook,
    *,
    ids: Sequence[str] | None = None,
    source: str | None = None,
    limit: int = 10_000,
) -> ReplayReport:
    """Retry dead letters (all of them, or those with ``ids`` / from ``source``)."""
    plans.refresh()  # a replay usually follows a plan change: use the plans as they are now
    letters = list_letters(database, limit=limit, source=source, ids=ids)
    report = ReplayReport()
    passed: list[str] = []
    unpacked = Unpacked()
    for letter in letters:
        attempt = Unpacked()
        batch = IntakeBatch(
            source=letter.source, key_id="replay", received_at=letter.received_at, sent_at=None,
            client_ip=None, messages=[letter.payload.encode()], rejected=[],
        )
        unpack(batch, plans, project_id=database.project_id, anonymize_all_ips=database.config.privacy.anonymize_ip, into=attempt)
        failed = [item for items in attempt.dead_letters.values() for item in items]
        if failed:
            report.still_failing.append((letter.id, failed[0].field, failed[0].reason))
            continue
        passed.append(letter.id)
        unpacked.rows.extend(attempt.rows)
        unpacked.warnings.extend(attempt.warnings)
    if unpacked.rows:
        report.stored_events = pipeline.ingest(rows_to_table(unpacked.rows, database.project_id)).events
    save_warnings(database, unpacked.warnings)
    if passed:
        database.delete_dead_letters(passed)
    report.replayed = len(passed)
    return report
