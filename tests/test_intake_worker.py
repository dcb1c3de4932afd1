"""The intake worker on every backend: records in, events and dead letters out,
exactly once across replays of the same records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from footfall.intake.admission import IntakeBatch, admit_batch, encode_record
from footfall.intake.dead_letters import count_letters, list_letters, replay
from footfall.intake.log import IntakeLog
from footfall.intake.plans import PlanBook, parse_plan
from footfall.intake.worker import IntakeWorker
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

PLAN = parse_plan(json.dumps({
    "name": "shop", "mode": "block",
    "events": {"purchase": {"type": "object", "properties": {"revenue": {"type": "number"}}}},
}))


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
