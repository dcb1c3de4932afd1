"""Kill the server at random moments while clients send, and check that every
acknowledged batch is stored exactly once. Shared by the test and the bench."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path

from footfall.store.database import Database

from .live import LiveServer


@dataclass
class CrashReport:
    batches: int
    events: int
    kills: int  # done while clients were sending
    attempts: int = 0
    acknowledged: int = 0  # batches answered 200 (each batch is retried until it is)
    failed_attempts: int = 0  # attempts with no 200 (connection refused, reset, timeout, 503)
    stored_events: int = 0
    distinct_stored: int = 0
    missing: list[str] = field(default_factory=list)  # acknowledged event ids not in the store

    @property
    def exactly_once(self) -> bool:
        return not self.missing and self.stored_events == self.distinct_stored == self.events


def _batches(count: int, size: int, seed: int) -> list[tuple[list[str], bytes]]:
    rng = random.Random(seed)
    batches = []
    for number in range(count):
        ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(size)]
        messages = [
            {"type": "track", "event": rng.choice(["viewed", "clicked", "added_to_cart"]), "messageId": message_id,
             "anonymousId": f"anon-{rng.randrange(500)}", "properties": {"batch": number, "n": i}}
            for i, message_id in enumerate(ids)
        ]
        batches.append((ids, json.dumps({"batch": messages}).encode()))
    return batches


def run_crash_test(
    data_dir: Path, *, batches: int, batch_size: int, kills: int, senders: int = 4, seed: int = 1,
    pace: float = 0.02,
) -> CrashReport:
    """``pace`` is each sender's pause between batches, so sending outlasts the kills."""
    server = LiveServer(data_dir)
    server.make_keys()
    server.start()
    work = _batches(batches, batch_size, seed)
    report = CrashReport(batches, batches * batch_size, kills=0)
    auth = "Basic " + b64encode(f"{server.write_key}:".encode()).decode()
    queue = list(range(len(work)))
    lock = threading.Lock()

    def send() -> None:
        while True:
            with lock:
                if not queue:
                    return
                index = queue.pop()
            _, body = work[index]
            while True:  # retry until acknowledged, as an SDK does
                request = urllib.request.Request(
                    f"{server.url}/v1/batch", data=body, headers={"Authorization": auth, "Content-Type": "application/json"}
                )
                with lock:
                    report.attempts += 1
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        if response.status == 200:
                            with lock:
                                report.acknowledged += 1
                            time.sleep(pace)
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    pass
                with lock:
                    report.failed_attempts += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    rng = random.Random(seed)
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.05, 0.6))
            if not any(thread.is_alive() for thread in threads):
                break
            server.kill()
            report.kills += 1
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()
        for thread in threads:
            thread.join(300)
        server.stop()  # graceful: the worker drains the log
    finally:
        server.kill()

    with Database.open(data_dir, read_only=True) as database:
        stored, distinct = database.query("SELECT count(*), count(DISTINCT event_id) FROM events").rows[0]
        report.stored_events, report.distinct_stored = int(stored), int(distinct)
        present = {row[0] for row in database.query("SELECT event_id FROM events").rows}
    report.missing = [event_id for ids, _ in work for event_id in ids if event_id not in present]
    return report
