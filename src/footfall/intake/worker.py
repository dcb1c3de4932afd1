"""The intake worker: from the durable log into the store, exactly once.

It reads records after the checkpoint, normalises their messages (clock skew,
context, privacy, tracking plans), hands the events to the pipeline (which
drops event ids it has stored already), stores dead letters and plan warnings
under ids derived from the record, and only then advances the checkpoint. A
crash anywhere in between replays the same records on restart, and every write
they cause is either deduplicated or replaces itself, so nothing is lost and
nothing is doubled.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import pyarrow as pa

from footfall.errors import ConsentDenied, MessageError
from footfall.events.parse import (
    DECODE_ERRORS,
    decode_all,
    decode_message,
    event_payload,
    event_values,
)
from footfall.events.record import rows_to_table
from footfall.intake.admission import IntakeBatch, decode_record
from footfall.intake.log import IntakeLog, IntakeReader, Record
from footfall.intake.plans import PlanBook
from footfall.pipeline import Pipeline
from footfall.profiles import open_profiles
from footfall.segments.live import LiveSegments
from footfall.store.database import Database, DeadLetter
from footfall.store.schema import PLAN_WARNINGS

log = logging.getLogger("footfall.intake")

_LETTER_NAMESPACE = uuid.UUID("0b7f3c1e-2a4d-4c8e-9f61-5d2a7e3b9c10")


class PlanWarning(NamedTuple):
    event_id: str
    plan: str
    event: str
    source: str
    field: str
    reason: str
    received_at: datetime


@dataclass
class Unpacked:
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # MESSAGE_COLUMNS values (``rows_to_table``)
    dead_letters: dict[str, list[DeadLetter]] = field(default_factory=lambda: defaultdict(list))
    warnings: list[PlanWarning] = field(default_factory=list)
    declined: int = 0


def letter_id(batch: IntakeBatch, index: int, payload: bytes) -> str:
    """The same id every time the same message of the same record is dead-lettered."""
    digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
    return str(uuid.uuid5(_LETTER_NAMESPACE, f"{batch.key_id}|{batch.received_at.isoformat()}|{index}|{digest}"))


def unpack(
    batch: IntakeBatch, plans: PlanBook, *, project_id: str, anonymize_all_ips: bool, into: Unpacked
) -> None:
    """Normalise one intake record's messages into event rows, dead letters and warnings."""
    letters = into.dead_letters[batch.source]
    for rejection in batch.rejected:
        letters.append(_letter(batch, rejection.index, rejection.field, rejection.reason, rejection.payload))
    into.declined += batch.declined
    check_plans = plans.checker(batch.source)
    decoded = decode_all(batch.messages) if batch.message_type is None else None
    anonymize = batch.anonymize_ip or anonymize_all_ips
    for index, data in enumerate(batch.messages):
        try:
            if decoded is not None:
                message = decoded[index]
            else:
                message, _ = decode_message(data, batch.message_type, max_bytes=len(data))
            name, properties = event_payload(message)
            violations = check_plans(name, properties) if check_plans is not None else ()
            if violations:
                blocking = next((violation for violation in violations if violation.mode == "block"), None)
                if blocking is not None:
                    letters.append(_letter(batch, index, blocking.field, blocking.reason, data))
                    continue
            row = event_values(
                message, raw=data, received_at=batch.received_at, batch_sent_at=batch.sent_at,
                client_ip=batch.client_ip, drop_ip=batch.drop_ip, anonymize=anonymize,
            )
        except ConsentDenied:
            into.declined += 1
            continue
        except MessageError as exc:  # passed the door, failed normalisation
            letters.append(_letter(batch, index, exc.field, exc.problem, data))
            continue
        except Exception as exc:
            # A message must never stall the log behind it: whatever it trips
            # over is its own problem, kept with it for a fix and a replay.
            log.warning("intake worker: message %d of a %s batch failed normalisation", index, batch.source, exc_info=True)
            letters.append(_letter(batch, index, "$", f"could not be normalised ({type(exc).__name__}: {exc})", data))
            continue
        if violations:
            into.warnings.extend(
                PlanWarning(row[0], v.plan, name, batch.source, v.field, v.reason, batch.received_at)
                for v in violations
            )
        into.rows.append(row)


def _self_contained(batch: IntakeBatch, payload: bytes) -> str:
    """The message as sent, plus what it inherited from its request (the
    endpoint's type, the batch's sentAt), so a replay reads it the same way."""
    text = payload.decode("utf-8", "replace")
    try:
        message = msgspec.json.decode(payload)
    except DECODE_ERRORS:
        return text
    if not isinstance(message, dict):
        return text
    inherited: dict[str, str] = {}
    if batch.message_type is not None and "type" not in message:
        inherited["type"] = batch.message_type
    if batch.sent_at is not None and "sentAt" not in message:
        inherited["sentAt"] = batch.sent_at.isoformat()
    return msgspec.json.encode({**message, **inherited}).decode() if inherited else text


def _letter(batch: IntakeBatch, index: int, field: str, reason: str, payload: bytes) -> DeadLetter:
    return DeadLetter(
        field=field,
        reason=reason,
        payload=_self_contained(batch, payload),
        id=letter_id(batch, index, payload),
        received_at=batch.received_at,
    )


@dataclass
class WorkerStats:
    records: int = 0
    events_stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    warned: int = 0
    declined: int = 0
    failures: int = 0
    last_error: str | None = None
    last_processed_at: float | None = None  # time.time()


class IntakeWorker:
    """Moves records from an intake log into a database, in order."""

    def __init__(
        self,
        intake: IntakeLog | IntakeReader,
        database: Database,
        plans: PlanBook,
        *,
        max_records: int = 1000,
        truncate_every: float = 5.0,
        segments: LiveSegments | None = None,
        tick_every: float = 1.0,
    ) -> None:
        self.intake = intake
        self.database = database
        self.plans = plans
        self.profiles = open_profiles(database)  # embedded, or Redis ([profiles] backend)
        # Saved segments, evaluated as batches are stored and, every
        # ``tick_every`` seconds while idle, as time passes.
        self.segments = segments
        self.tick_every = tick_every
        self._last_tick = -math.inf
        self.pipeline = Pipeline(database, remember_ids=True, profiles=self.profiles, segments=segments)
        self.max_records = max_records
        self.truncate_every = truncate_every
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_truncate = time.monotonic()
        # The pipeline keeps identity state in memory and is not thread-safe:
        # the loop and anything else that ingests (dead-letter replay) take turns.
        self.lock = threading.Lock()

    # -- one step ----------------------------------------------------------------

    def process_available(self) -> int:
        """Process the records after the checkpoint (up to ``max_records``); how many."""
        with self.lock:
            return self._process_available()

    def _process_available(self) -> int:
        records = list(self.intake.read(after=self.intake.checkpointed, limit=self.max_records))
        if not records:
            return 0
        try:
            self._store(records)
        except Exception as exc:
            if len(records) == 1:
                raise
            # Counted even when the records then go in one at a time.
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("intake worker: storing %d records together failed (%s); storing them one by one",
                        len(records), self.stats.last_error, exc_info=exc)
            # Find the record the store refuses, checkpointing those before
            # it; a store that is down refuses them all, and the caller
            # retries later.
            for record in records:
                self._store([record])
                self.intake.checkpoint(record.position)
        self.intake.checkpoint(records[-1].position)
        self.stats.records += len(records)
        self.stats.last_processed_at = time.time()
        if time.monotonic() - self._last_truncate > self.truncate_every:
            self.intake.truncate()
            self._last_truncate = time.monotonic()
        return len(records)

    def _store(self, records: list[Record]) -> None:
        unpacked = Unpacked()
        anonymize_all = self.database.config.privacy.anonymize_ip
        for record in records:
            try:
                batch = decode_record(record.payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # Only a record written by an incompatible Footfall gets here.
                unpacked.dead_letters["intake"].append(
                    DeadLetter("$", f"unreadable intake record {record.position}: {exc}",
                               record.payload.hex(), id=str(uuid.uuid5(_LETTER_NAMESPACE, f"record|{record.position}")))
                )
                continue
            unpack(batch, self.plans, project_id=self.database.project_id, anonymize_all_ips=anonymize_all, into=unpacked)
        report = self.pipeline.ingest(rows_to_table(unpacked.rows, self.database.project_id))
        for source, letters in unpacked.dead_letters.items():
            self.database.dead_letter(source, letters)
        save_warnings(self.database, unpacked.warnings)
        self.stats.events_stored += report.events
        self.stats.duplicates += report.duplicates
        self.stats.dead_lettered += sum(len(letters) for letters in unpacked.dead_letters.values())
        self.stats.warned += len(unpacked.warnings)
        self.stats.declined += unpacked.declined

    # -- the loop ----------------------------------------------------------------

    def run(self, idle_wait: float = 0.5, retry_wait: float = 1.0) -> None:
        """Process until ``stop``; store failures are logged and retried, never fatal."""
        try:
            with self.lock:
                self.pipeline.prepare()  # identities and profiles, before the first batch
        except Exception:
            log.exception("intake worker: loading state from the store failed; retrying with the first batch")
        while not self._stop.is_set():
            try:
                if self.process_available():
                    continue
            except Exception as exc:
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("intake worker: storing records failed; retrying in %.1f s", retry_wait)
                self._stop.wait(retry_wait)
                continue
            try:
                self.tick()
            except Exception as exc:
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("intake worker: re-evaluating segments failed; retrying in %.1f s", retry_wait)
            checkpointed = self.intake.checkpointed or 0
            try:
                self.intake.wait_for(checkpointed, min(idle_wait, self.tick_every))
            except Exception:
                if self._stop.is_set():
                    return
                raise

    def tick(self) -> None:
        """Segment changes due by time alone (at most every ``tick_every`` s)."""
        if self.segments is None or time.monotonic() - self._last_tick < self.tick_every:
            return
        self._last_tick = time.monotonic()
        with self.lock:
            self.pipeline.prepare()
            self.segments.tick()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self.run, name="footfall-intake-worker", daemon=True)
        self._thread.start()

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop the loop; with ``drain``, store what is in the log first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if drain:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process_available():
                pass


def save_warnings(database: Database, warnings: list[PlanWarning]) -> None:
    if not warnings:
        return
    project_id = database.project_id
    columns = list(zip(*warnings, strict=True))
    table = pa.table(
        {
            "project_id": [project_id] * len(warnings),
            "event_id": list(columns[0]),
            "plan": list(columns[1]),
            "event": list(columns[2]),
            "source": list(columns[3]),
            "field": list(columns[4]),
            "reason": list(columns[5]),
            "received_at": pa.array([w.received_at.astimezone(UTC) for w in warnings], PLAN_WARNINGS.schema.field("received_at").type),
        },
        schema=PLAN_WARNINGS.schema,
    )
    database.upsert(PLAN_WARNINGS.name, table)
