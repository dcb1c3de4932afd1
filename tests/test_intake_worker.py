"""The intake worker on every backend: records in, events and dead letters out,
exactly once across replays of the same records."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from footfall.intake.admission import IntakeBatch, admit_batch, encode_record
from footfall.intake.dead_letters import count_letters, list_letters, replay
from footfall.intake.log import IntakeLog
from footfall.intake.plans import PlanBook, parse_plan
from footfall.intake.worker import IntakeWorker
from footfall.pipeline import IngestReport
from footfall.store.database import Database

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(messages: list[dict[str, object]], source: str = "web") -> bytes:
    admission = admit_batch(json.dumps({"batch": messages}).encode(), 32_768, RECEIVED)
    return encode_record(
        IntakeBatch(
            source=source, key_id="k1", received_at=RECEIVED, sent_at=None, client_ip="198.51.100.7",
            messages=admission.accepted, rejected=admission.rejected, declined=admission.declined,
        )
    )


MESSAGES: list[dict[str, object]] = [
    {"type": "track", "event": "viewed", "anonymousId": "a", "messageId": "m1", "timestamp": "2026-03-01T11:00:00Z"},
    {"type": "identify", "anonymousId": "a", "userId": "ada", "messageId": "m2", "timestamp": "2026-03-01T11:01:00Z",
     "traits": {"plan": "pro"}},
    {"type": "track", "event": "purchase", "userId": "ada", "messageId": "m3", "timestamp": "2026-03-01T11:02:00Z",
     "properties": {"revenue": "lots"}},
    {"type": "track", "anonymousId": "a", "messageId": "m4"},  # no event name: dead letter
]

PLAN_TEXT = json.dumps({
    "name": "shop", "mode": "block",
    "events": {"purchase": {"type": "object", "properties": {"revenue": {"type": "number"}}}},
})
PLAN = parse_plan(PLAN_TEXT)


def test_worker_stores_events_and_dead_letters_once(database: Database, tmp_path: Path) -> None:
    with IntakeLog(tmp_path / "intake", fsync=False) as log:
        log.append(record(MESSAGES))
        log.append(record(MESSAGES))  # the client retried: the same batch again
        worker = IntakeWorker(log, database, PlanBook.of([PLAN]))
        assert worker.process_available() == 2
        assert log.checkpointed == 2

        events = database.query("SELECT event_id, event, ip FROM events ORDER BY event_id").rows
        assert events == [("m1", "viewed", "198.51.100.7"), ("m2", "identify", "198.51.100.7")]
        assert database.query("SELECT count(DISTINCT person_id) FROM events").rows == [(1,)]
        letters = sorted((letter.field, letter.reason) for letter in list_letters(database))
        # One letter each, though both records carried them: ids come from the record's content.
        assert [field for field, _ in letters] == ["$.batch[3].event", "$.properties.revenue"]
        assert count_letters(database) == 2
        assert worker.stats.duplicates == 2

        # The plan is relaxed; the blocked purchase replays, the nameless track still fails.
        report = replay(database, worker.pipeline, PlanBook.of([]))
        assert report.replayed == 1
        assert report.still_failing[0][1] == "$.event"
        assert database.query("SELECT count(*) FROM events WHERE event = 'purchase'").rows == [(1,)]
        assert count_letters(database) == 1


def test_a_restarted_worker_replays_from_the_checkpoint(database: Database, tmp_path: Path) -> None:
    with IntakeLog(tmp_path / "intake", fsync=False) as log:
        log.append(record(MESSAGES[:2]))
        IntakeWorker(log, database, PlanBook.of([])).process_available()
        log.append(record(MESSAGES[2:3]))
    # A crash after storing but before the checkpoint is the same as no checkpoint at all.
    (tmp_path / "intake" / "checkpoint").unlink()
    with IntakeLog(tmp_path / "intake", fsync=False) as log:
        worker = IntakeWorker(log, database, PlanBook.of([]))
        assert worker.process_available() == 2
        assert worker.stats.events_stored == 1
        assert worker.stats.duplicates == 2
    assert database.query("SELECT count(*) FROM events").rows == [(3,)]


# -- the unpack helper -------------------------------------------------------------


def helper_worker(log: IntakeLog, database: Database, plans: PlanBook) -> IntakeWorker:
    """A worker that hands every read to its two helper processes, a record each."""
    return IntakeWorker(log, database, plans, max_records=2, helpers=2, helper_from_bytes=0)


def test_the_helper_unpacks_what_the_worker_would(database: Database, tmp_path: Path) -> None:
    warn = parse_plan(PLAN_TEXT.replace('"mode": "block"', '"mode": "warn"'))
    with IntakeLog(tmp_path / "intake", fsync=False) as log:
        for start in range(5):
            messages = [{**message, "messageId": f"{message['messageId']}-{start}"} for message in MESSAGES]
            log.append(record(messages, source="web" if start % 2 else "app"))
        log.append(b"not an intake record")
        worker = helper_worker(log, database, PlanBook.of([warn]))
        try:
            stored = 0
            while count := worker.process_available():
                stored += count
            assert worker.helper is not None
            assert worker.helper.running
        finally:
            worker.stop()
        assert worker.helper is not None
        assert not worker.helper.running
        assert stored == 6
        assert log.checkpointed == 6
    assert worker.stats.unpacked_by_helper == 6
    assert worker.stats.failures == 0
    assert database.query("SELECT count(*), count(DISTINCT person_id) FROM events").rows == [(15, 1)]
    assert database.query("SELECT count(*) FROM plan_warnings WHERE field = '$.properties.revenue'").rows == [(5,)]
    letters = sorted(letter.field for letter in list_letters(database))
    assert letters == ["$"] + ["$.batch[3].event"] * 5  # the unreadable record, and each nameless track
    assert worker.stats.dead_lettered == 6
    assert worker.stats.warned == 5


def test_the_helper_follows_a_changed_plan(database: Database, tmp_path: Path) -> None:
    plans = PlanBook(tmp_path, refresh_every=0)
    plans.save(PLAN_TEXT.replace('"mode": "block"', '"mode": "warn"'), "test")
    with IntakeLog(tmp_path / "intake", fsync=False) as log:
        worker = helper_worker(log, database, plans)
        try:
            log.append(record([MESSAGES[2]]))
            assert worker.process_available() == 1
            assert worker.stats.warned == 1
            assert worker.stats.dead_lettered == 0
            plans.save(PLAN_TEXT, "test")  # now blocking
            log.append(record([{**MESSAGES[2], "messageId": "m3-again"}]))
            assert worker.process_available() == 1
            assert worker.stats.warned == 1
            assert worker.stats.dead_lettered == 1
            assert worker.stats.unpacked_by_helper == 2
        finally:
            worker.stop()


def test_a_dead_helper_loses_nothing(database: Database, tmp_path: Path) -> None:
    with IntakeLog(tmp_path / "intake", fsync=False) as log:
        for index in range(2):
            log.append(record([{**MESSAGES[0], "messageId": f"m{index}"}]))
        worker = helper_worker(log, database, PlanBook.of([]))
        assert worker.helper is not None
        worker.helper.retry_after = 0.0
        try:
            assert worker.process_available() == 2
            pool = worker.helper._pool
            assert pool is not None
            for process in list(pool._processes.values()):
                process.kill()
                process.join()
            for index in range(2, 6):  # these go to the dead helpers first
                log.append(record([{**MESSAGES[0], "messageId": f"m{index}"}]))
            stored = 2
            while count := worker.process_available():
                stored += count
            assert stored == 6
            assert worker.stats.failures == 1
            assert "unpack helper" in (worker.stats.last_error or "")
            assert worker.helper.failures == 1
            assert worker.helper.running  # restarted once retry_after had passed
        finally:
            worker.stop()
    assert database.query("SELECT count(*) FROM events").rows == [(6,)]


def test_a_store_failure_under_the_helpers_stores_everything_once(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with IntakeLog(tmp_path / "intake", fsync=False) as log:
        for index in range(4):
            log.append(record([{**MESSAGES[0], "messageId": f"m{index}"}]))
        worker = helper_worker(log, database, PlanBook.of([]))
        ingest, calls = worker.pipeline.ingest, []

        def flaky(table: pa.Table) -> IngestReport:
            calls.append(table.num_rows)
            if len(calls) in (1, 3):  # the chunk, then the second record alone
                raise RuntimeError("the store is down")
            return ingest(table)

        monkeypatch.setattr(worker.pipeline, "ingest", flaky)
        try:
            with pytest.raises(RuntimeError, match="the store is down"):
                worker.process_available()
            assert log.checkpointed == 1  # the first record went in alone
            stored = 1
            while count := worker.process_available():  # the helpers start over from the checkpoint
                stored += count
        finally:
            worker.stop()
        assert stored == 4
        assert log.checkpointed == 4
    assert database.query("SELECT count(*), count(DISTINCT event_id) FROM events").rows == [(4, 4)]
    assert worker.stats.unpacked_by_helper >= 2


HELPERS_THEN_DIE = """
import json, os, signal, sys
from pathlib import Path
from footfall.intake.log import IntakeLog
from footfall.intake.plans import PlanBook
from footfall.intake.worker import IntakeWorker
from footfall.pipeline import IngestReport
from footfall.store.database import Database
sys.path.insert(0, {tests!r})
from test_intake_worker import MESSAGES, record
directory = Path({directory!r})
database = Database.open(directory)
log = IntakeLog(directory / "intake", fsync=False)
log.append(record(MESSAGES[:1]))
log.append(record(MESSAGES[1:2]))
worker = IntakeWorker(log, database, PlanBook.of([]), helpers=2, helper_from_bytes=0)
assert worker.process_available() == 2
(directory / "helpers.json").write_text(json.dumps([process.pid for process in worker.helper._pool._processes.values()]))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_helpers_end_with_the_worker_process(tmp_path: Path) -> None:
    script = HELPERS_THEN_DIE.format(tests=str(Path(__file__).parent), directory=str(tmp_path))
    # Output to a file: a helper left alive would hold a pipe open.
    with (tmp_path / "stderr").open("w") as stderr:
        finished = subprocess.run([sys.executable, "-c", script], stdout=stderr, stderr=stderr, timeout=120)
    assert finished.returncode == -signal.SIGKILL, (tmp_path / "stderr").read_text()
    helpers = json.loads((tmp_path / "helpers.json").read_text())
    assert len(helpers) == 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in helpers):
        time.sleep(0.1)
    assert not [pid for pid in helpers if Path(f"/proc/{pid}").exists()], "a helper outlived the worker's process"
