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

import gc
import hashlib
import logging
import math
import multiprocessing
import os
import threading
import time
import uuid
from collections import defaultdict, deque
from concurrent.futures import Future, ProcessPoolExecutor, wait
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
from footfall.intake.plans import CompiledPlan, Plan, PlanBook
from footfall.lifetime import exit_with_parent
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


@dataclass
class Chunk:
    """Records unpacked for the pipeline; picklable, to come from the helper."""

    table: pa.Table  # EVENT_COLUMNS rows for ``Pipeline.ingest``
    dead_letters: dict[str, list[DeadLetter]]
    warnings: list[PlanWarning]
    declined: int

    @staticmethod
    def joined(parts: list[Chunk]) -> Chunk:
        """Chunks of consecutive records as one, in order."""
        if len(parts) == 1:
            return parts[0]
        letters: dict[str, list[DeadLetter]] = defaultdict(list)
        for part in parts:
            for source, found in part.dead_letters.items():
                letters[source].extend(found)
        return Chunk(
            table=pa.concat_tables([part.table for part in parts]).combine_chunks(),
            dead_letters=dict(letters),
            warnings=[warning for part in parts for warning in part.warnings],
            declined=sum(part.declined for part in parts),
        )


def unpack_records(
    records: list[tuple[int, bytes]], plans: PlanBook, *, project_id: str, anonymize_all_ips: bool
) -> Chunk:
    """Unpack intake records (position, payload) into one chunk for the pipeline."""
    unpacked = Unpacked()
    for position, payload in records:
        try:
            batch = decode_record(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Only a record written by an incompatible Footfall gets here.
            unpacked.dead_letters["intake"].append(
                DeadLetter("$", f"unreadable intake record {position}: {exc}",
                           payload.hex(), id=str(uuid.uuid5(_LETTER_NAMESPACE, f"record|{position}")))
            )
            continue
        unpack(batch, plans, project_id=project_id, anonymize_all_ips=anonymize_all_ips, into=unpacked)
    return Chunk(
        table=rows_to_table(unpacked.rows, project_id),
        dead_letters=dict(unpacked.dead_letters),
        warnings=unpacked.warnings,
        declined=unpacked.declined,
    )


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


# -- the helper process -----------------------------------------------------------


class UnpackHelper:
    """Processes that unpack the next records while the worker stores the current ones.

    Unpacking (decoding, normalising, checking plans, building Arrow) is most
    of the worker's time per event, and needs nothing but the records and the
    plans; identity, sessions, profiles and the store write must stay with the
    worker. The helpers unpack the next chunk, split between them, while the
    worker stores the current one.
    """

    def __init__(
        self, plans: PlanBook, *, project_id: str, anonymize_all_ips: bool, processes: int = 2,
        retry_after: float = 30.0,
    ) -> None:
        if processes < 1:
            raise ValueError("an unpack helper needs at least one process")
        self.plans = plans
        self.project_id = project_id
        self.anonymize_all_ips = anonymize_all_ips
        self.processes = processes
        self.retry_after = retry_after
        self.failures = 0
        self._pool: ProcessPoolExecutor | None = None
        self._compiled: list[CompiledPlan] | None = None
        self._generation = 0  # of the plans: a helper rebuilds its book when it changes
        self._failed_at = -math.inf

    @property
    def running(self) -> bool:
        return self._pool is not None

    @property
    def usable(self) -> bool:
        return self._pool is not None or time.monotonic() - self._failed_at >= self.retry_after

    def start(self) -> None:
        if self._pool is None:
            # Spawned, not forked: the worker's process has DuckDB's threads.
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"),
                initializer=_helper_started, initargs=(os.getpid(),),
            )

    def submit(self, records: list[Record]) -> list[Future[Chunk]]:
        """Start unpacking ``records``: one job per process, in order."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("the unpack helpers are not running")
        compiled = self.plans.plans()
        if compiled is not self._compiled:
            self._compiled = compiled
            self._generation += 1
        plans = [plan.plan for plan in compiled]
        share = -(-len(records) // self.processes)
        return [
            pool.submit(
                _unpack_in_helper, [(record.position, record.payload) for record in records[start : start + share]],
                self._generation, plans, self.project_id, self.anonymize_all_ips,
            )
            for start in range(0, len(records), share)
        ]

    def failed(self) -> None:
        """Drop the helpers; the worker unpacks by itself until ``retry_after`` has passed."""
        self.failures += 1
        self._failed_at = time.monotonic()
        self.close()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_helper_book: tuple[int, PlanBook] = (0, PlanBook.of([]))


def _helper_started(parent: int) -> None:
    # Started from the worker's thread, which may end before the process does.
    exit_with_parent(parent, by_signal=False)
    # Each chunk makes a tuple per event and drops them all: collect young
    # objects less often (as the worker's process does).
    gc.set_threshold(50_000, 20, 100)


def _unpack_in_helper(
    records: list[tuple[int, bytes]], generation: int, plans: list[Plan], project_id: str, anonymize_all_ips: bool
) -> Chunk:
    global _helper_book
    if _helper_book[0] != generation:
        _helper_book = (generation, PlanBook.of(plans))
    return unpack_records(records, _helper_book[1], project_id=project_id, anonymize_all_ips=anonymize_all_ips)


@dataclass
class _Ahead:
    """Records being unpacked by the helpers."""

    after: int | None  # the position they follow
    records: list[Record]
    parts: list[Future[Chunk]]  # in order


class _Feeder:
    """Hands the helpers the records as they are logged (all that are new,
    once the helpers are done with the last lot; ``poll`` is how often an idle
    log is looked at), so that the records that come in while the worker
    stores a chunk are unpacked by the time it turns to them. (Were they handed
    over only when the worker turned to them, an event would wait for about
    two and a half chunks' store times rather than one and a half.)"""

    def __init__(
        self, intake: IntakeLog | IntakeReader, helper: UnpackHelper, *, after: int | None, max_records: int,
        poll: float = 0.02,
    ) -> None:
        self.intake = intake
        self.helper = helper
        self.max_records = max_records
        self.poll = poll
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._queue: deque[_Ahead] = deque()
        self._after = after  # where the next read starts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="footfall-unpack-feeder", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._cond:
                    after = self._after
                records = list(self.intake.read(after=after, limit=self.max_records))
                if not records:
                    self._stop.wait(self.poll)
                    continue
                parts = self.helper.submit(records)
                with self._cond:
                    if self._after == after:  # else the worker moved it back meanwhile
                        self._queue.append(_Ahead(after, records, parts))
                        self._after = records[-1].position
                        self._cond.notify_all()
                # The next records go over once these are done: the busier
                # the log, the more of them at once.
                while wait(parts, timeout=0.1).not_done and not self._stop.is_set():
                    pass
        except Exception as exc:
            if not self._stop.is_set():
                self.error = exc
        finally:
            with self._cond:
                self._cond.notify_all()

    def take(self, after: int | None, timeout: float) -> list[_Ahead]:
        """Everything handed over after ``after`` (the checkpoint), in order;
        waits up to ``timeout`` for something. A checkpoint the feeder did not
        expect (the worker stored records one by one after a failure) starts
        it again from there."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._queue and self._queue[0].after == after:
                    taken = list(self._queue)
                    self._queue.clear()
                    return taken
                if self._queue or self._after != after:
                    self._queue.clear()
                    self._after = after
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return []
                self._cond.wait(remaining)

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._queue.clear()
        self._thread.join()


@dataclass
class WorkerStats:
    records: int = 0
    events_stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    warned: int = 0
    declined: int = 0
    failures: int = 0
    unpacked_by_helper: int = 0  # records
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
        helpers: int | None = None,
        helper_from_bytes: int = 256 * 1024,
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
        # Helper processes unpack ahead once a read brings ``helper_from_bytes``
        # of records (a backlog, or heavy traffic), and from then on.
        processes = database.config.intake.unpack_processes if helpers is None else helpers
        self.helper = UnpackHelper(
            plans, project_id=database.project_id, anonymize_all_ips=database.config.privacy.anonymize_ip,
            processes=processes,
        ) if processes > 0 else None
        self.helper_from_bytes = helper_from_bytes
        self._feeder: _Feeder | None = None
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
        records, chunk = self._next_chunk()
        if not records:
            return 0
        try:
            self._store(records, chunk)
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
        if chunk is not None:
            self.stats.unpacked_by_helper += len(records)
        self.stats.last_processed_at = time.time()
        if time.monotonic() - self._last_truncate > self.truncate_every:
            self.intake.truncate()
            self._last_truncate = time.monotonic()
        return len(records)

    def _next_chunk(self) -> tuple[list[Record], Chunk | None]:
        """The records after the checkpoint, and their chunk if the helpers
        unpacked them (None: unpack here)."""
        after = self.intake.checkpointed
        for _ in range(2):  # once more if the feeder stops while we wait
            if self._feeder is None or not self._feeder.alive:
                if self._feeder is not None:  # it failed
                    self._helper_failed(self._feeder.error or RuntimeError("the feeder stopped"))
                records = list(self.intake.read(after=after, limit=self.max_records))
                helper = self.helper
                if not records or helper is None or not helper.usable or self._stop.is_set():
                    return records, None
                if not helper.running and sum(len(record.payload) for record in records) < self.helper_from_bytes:
                    return records, None
                try:
                    helper.start()
                except Exception as exc:
                    self._helper_failed(exc)
                    return records, None
                self._feeder = _Feeder(self.intake, helper, after=after, max_records=self.max_records)
            if not self.intake.wait_for(after or 0, 0.0):
                return [], None  # nothing to wait for
            taken = self._feeder.take(after, timeout=1.0)
            if taken:
                records = [record for ahead in taken for record in ahead.records]
                return records, self._chunk_of(taken)
            if self._feeder.alive:
                break
        return [], None

    def _chunk_of(self, taken: list[_Ahead], timeout: float = 300.0) -> Chunk | None:
        try:
            deadline = time.monotonic() + timeout
            return Chunk.joined(
                [part.result(max(deadline - time.monotonic(), 0.0)) for ahead in taken for part in ahead.parts]
            )
        except Exception as exc:
            self._helper_failed(exc)
            return None

    def _helper_failed(self, exc: BaseException) -> None:
        assert self.helper is not None
        self.stats.failures += 1
        self.stats.last_error = f"unpack helper: {type(exc).__name__}: {exc}"
        log.warning("intake worker: an unpack helper failed (%s); unpacking in the worker for %.0f s",
                    self.stats.last_error, self.helper.retry_after, exc_info=exc)
        self._stop_helpers(failed=True)

    def _stop_helpers(self, *, failed: bool = False) -> None:
        feeder, self._feeder = self._feeder, None
        if feeder is not None:
            feeder.stop()
        if self.helper is not None:
            if failed:
                self.helper.failed()
            else:
                self.helper.close()

    def _store(self, records: list[Record], chunk: Chunk | None = None) -> None:
        if chunk is None:
            chunk = self._unpack(records)
        report = self.pipeline.ingest(chunk.table)
        for source, letters in chunk.dead_letters.items():
            self.database.dead_letter(source, letters)
        save_warnings(self.database, chunk.warnings)
        self.stats.events_stored += report.events
        self.stats.duplicates += report.duplicates
        self.stats.dead_lettered += sum(len(letters) for letters in chunk.dead_letters.values())
        self.stats.warned += len(chunk.warnings)
        self.stats.declined += chunk.declined

    def _unpack(self, records: list[Record]) -> Chunk:
        return unpack_records(
            [(record.position, record.payload) for record in records], self.plans,
            project_id=self.database.project_id, anonymize_all_ips=self.database.config.privacy.anonymize_ip,
        )

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
        with self.lock:
            # The drain unpacks here: a feeder between reads could make it
            # look as if the log were empty.
            self._stop_helpers()
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
