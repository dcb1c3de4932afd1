"""Collector load: durable acknowledgements per second over HTTP, against the store's write rate.

One run, one machine, four measurements:

- peak: a fresh ``footfall serve`` (its own processes, temporary data directory)
  takes ``POST /v1/batch`` requests of 100 Segment messages (track/page/identify,
  about 500 bytes each, thousands of anonymous ids) from separate load-generator
  processes over loopback, ``--concurrency`` requests in flight for
  ``--duration`` seconds. Reported: events per second answered 200 (a 200 means
  the batch was fsynced to the intake log), request latency p50/p99/max, every
  answer that was not a 200, and whether the intake worker kept up (its lag
  during the phase and how long it took to drain afterwards).
- freshness: at half the peak rate, the time from a batch's 200 to its events
  being queryable through ``/v1/sql``. The benchmark polls every 50 ms for the
  last message ids of the batches received since the oldest one still waiting
  (a batch is one intake record and is stored in one transaction), so figures
  are upper bounds at 50 ms resolution.
- exactly once: after draining, ``count(*)`` of stored events equals the events
  acknowledged, and every stored event id is distinct.
- ceiling: after the server has stopped, the same messages, parsed in this
  process outside the timing, are written to a fresh store with
  ``Database.insert`` (the bulk path) and, on another fresh store, through
  ``Pipeline.ingest`` (dedup, identity, sessions, persons, then the write).
  The ratios collector ÷ ceiling are the figures to quote. Single-core rates of
  the collector's door check (``admit_batch`` + ``encode_record``) and of the
  worker's parse step are printed alongside: they show where per-event CPU goes.

The generators run on the same machine and compete with the server for its
cores (2 on the reference machine). To stay cheap they send pre-built requests
(one fixed-width id substitution per request) over raw asyncio keep-alive
connections, but the peak is still a lower bound for the server on its own.

    .venv/bin/python bench/collector_load.py                  # 20 s peak, 16 in flight, 2 generators
    .venv/bin/python bench/collector_load.py --quick          # a ~5 s peak, shorter phases
    .venv/bin/python bench/collector_load.py --duration 60 --concurrency 32 --processes 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import math
import multiprocessing
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event as EventFlag
from pathlib import Path
from typing import Any

import pyarrow as pa

from footfall.events.parse import DEFAULT_MAX_MESSAGE_BYTES
from footfall.intake.admission import IntakeBatch, admit_batch, encode_record
from footfall.intake.plans import PlanBook
from footfall.intake.worker import unpack_records
from footfall.keys import KeyStore
from footfall.pipeline import Pipeline
from footfall.store.database import Database

BATCH_EVENTS = 100
VISITORS = 5_000  # distinct anonymous ids; every tenth visitor is signed in
PRODUCTS = 400
TEMPLATES_PER_GENERATOR = 64
# Each request's message ids are "bench-<token>-<index>"; the token replaces
# this placeholder (same width, so Content-Length stays right).
TOKEN_WIDTH = 16
PLACEHOLDER = "~" * TOKEN_WIDTH
CEILING_PHASE = 0xF
CHUNK_ROWS = 50_000
POLL_SECONDS = 0.05
CLOCK_SLACK_SECONDS = 0.25  # between this process's monotonic clock and the server's wall clock
REQUEST_TIMEOUT = 60.0
MAX_SAMPLES = 5  # non-200 answers and failures shown per generator, besides the counts

TARGET_EVENTS_PER_SECOND = 50_000
TARGET_P99_MS = 100.0
TARGET_FRESHNESS_P99_MS = 1_000.0

USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
]
REFERRERS = ["", "", "https://www.google.com/", "https://www.bing.com/", "https://t.co/x7Qe2", "https://news.example.org/deals"]
CATEGORIES = ["shoes", "jackets", "bags", "hats", "socks"]
SITE = "https://shop.example.com"


# -- messages ---------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def visitor_ids(visitor: int) -> tuple[str, str | None]:
    """A visitor's stable anonymous id, and user id if they are signed in."""
    anonymous_id = f"{(visitor * 2_654_435_761) % 2**32:08x}-anon-{visitor:05d}"
    return anonymous_id, f"user-{visitor:05d}" if visitor % 10 == 0 else None


def page_view(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    """(path, title, product properties) of a random page of the shop."""
    roll = rng.random()
    if roll < 0.5:
        sku = rng.randrange(PRODUCTS)
        product = {
            "product_id": f"sku-{sku:04d}",
            "category": CATEGORIES[sku % len(CATEGORIES)],
            "price": round(9.9 + sku * 0.37, 2),
            "currency": "EUR",
        }
        return f"/products/sku-{sku:04d}", f"Product {sku:04d}", product
    if roll < 0.8:
        category = rng.choice(CATEGORIES)
        return f"/collections/{category}", category.title(), {}
    return rng.choice([("/", "Home", {}), ("/cart", "Your cart", {}), ("/checkout", "Checkout", {})])


def segment_message(rng: random.Random, index: int, sent_at: datetime) -> dict[str, Any]:
    """One Segment-format message as analytics.js would send it."""
    visitor = rng.randrange(VISITORS)
    anonymous_id, user_id = visitor_ids(visitor)
    path, title, product = page_view(rng)
    url = SITE + path + ("?utm_source=newsletter&utm_campaign=spring" if rng.random() < 0.1 else "")
    referrer = rng.choice(REFERRERS)
    message: dict[str, Any] = {
        "messageId": f"bench-{PLACEHOLDER}-{index:03d}",
        "anonymousId": anonymous_id,
        "originalTimestamp": iso(sent_at - timedelta(milliseconds=rng.randrange(20_000))),
        "context": {
            "userAgent": USER_AGENTS[visitor % len(USER_AGENTS)],
            "page": {"url": url, "title": title, **({"referrer": referrer} if referrer else {})},
            "library": {"name": "analytics.js", "version": "5.2.1"},
        },
    }
    if user_id is not None:
        message["userId"] = user_id
    roll = rng.random()
    if user_id is not None and roll < 0.3:
        message.update(type="identify", traits={"email": f"{user_id}@example.com", "plan": "member"})
    elif roll < 0.5:
        message.update(type="page", name=title, properties={"title": title})
    else:
        name, properties = rng.choice([
            ("Product Viewed", product),
            ("Product Added", {**product, "quantity": rng.randint(1, 3)}),
            ("Clicked", {"x": rng.randrange(1440), "y": rng.randrange(2400), "viewport_width": 1440,
                         "viewport_height": 900, "selector": "button.add-to-cart"}),
            ("Scrolled", {"depth": rng.choice([25, 50, 75, 100])}),
        ])
        message.update(type="track", event=name, properties=properties)
    return message


def batch_bodies(generator: int, sent_at: datetime) -> list[bytes]:
    """The request bodies a generator cycles through; message ids hold the placeholder."""
    rng = random.Random(generator)
    return [
        json.dumps(
            {"batch": [segment_message(rng, index, sent_at) for index in range(BATCH_EVENTS)], "sentAt": iso(sent_at)},
            separators=(",", ":"),
        ).encode()
        for _ in range(TEMPLATES_PER_GENERATOR)
    ]


def batch_token(phase: int, generator: int, number: int) -> str:
    """Unique per request across phases and generators; TOKEN_WIDTH hex digits."""
    return f"{phase:x}{generator:03x}{number:012x}"


def marker_id(token: str) -> str:
    """The message id of the last message of the batch sent with this token."""
    return f"bench-{token}-{BATCH_EVENTS - 1:03d}"


# -- the server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``footfall serve`` as a subprocess on a free loopback port, with a write and a secret key."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True)
        keys = KeyStore(data_dir)
        self.write_key, _ = keys.create("write", "bench")
        self.secret_key, _ = keys.create("secret", "admin")
        self.port = free_port()
        self.log_path = data_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "footfall", "--data-dir", str(self.data_dir), "serve",
                 "--port", str(self.port), "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise RuntimeError(f"the server did not come up in {timeout} s:\n{self.log_path.read_text()}")

    def stop(self) -> tuple[float, int | None]:
        """SIGTERM (the worker drains the log first); seconds it took and the exit status."""
        if self.process is None:
            return 0.0, None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            status: int | None = self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            status = None
        self.process = None
        return time.monotonic() - started, status

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time used so far by the server process and by its descendants (the
        store process ``footfall serve`` starts); Linux ``/proc``, NaN elsewhere."""
        root = self.process.pid if self.process else 0
        processes: dict[int, tuple[int, float]] = {}  # pid: (parent pid, CPU seconds)
        try:
            entries = [entry for entry in Path("/proc").iterdir() if entry.name.isdigit()]
        except OSError:
            return math.nan, math.nan
        for entry in entries:
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it ended meanwhile
            processes[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        if root not in processes:
            return math.nan, math.nan
        tree, grown = {root}, True
        while grown:
            children = {pid for pid, (parent, _) in processes.items() if parent in tree} - tree
            tree |= children
            grown = bool(children)
        return processes[root][1], sum(processes[pid][1] for pid in tree - {root})

    def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics`` by its name (with labels, if any)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=30) as response:
            lines = response.read().decode().splitlines()
        samples = (line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))
        return {name: float(value) for name, value in samples}

    def lag(self) -> int:
        return int(self.metrics()["footfall_intake_lag_records"])

    def sql(self, query: str) -> list[list[Any]]:
        request = urllib.request.Request(
            f"{self.url}/v1/sql",
            data=json.dumps({"sql": query}).encode(),
            headers={"Authorization": f"Bearer {self.secret_key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            rows: list[list[Any]] = json.loads(response.read())["rows"]
            return rows

    def log_problems(self) -> list[str]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if "Traceback" in line or "ERROR" in line or "Exception" in line]


def machine_busy_seconds() -> float:
    """CPU time all cores have spent busy since boot (Linux ``/proc/stat``; NaN elsewhere)."""
    try:
        user, nice, system, _idle, _iowait, irq, softirq, steal = Path("/proc/stat").read_text().split()[1:9]
    except (OSError, ValueError):
        return math.nan
    return sum(int(value) for value in (user, nice, system, irq, softirq, steal)) / os.sysconf("SC_CLK_TCK")


def wait_for_drain(server: Server, timeout: float = 600.0) -> float:
    """Seconds until the intake worker has stored every record in the log."""
    started = time.monotonic()
    while server.lag() > 0:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the intake worker did not drain its log in {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - started


# -- load generators (separate processes) -----------------------------------------------


@dataclass
class Tally:
    """What one phase's requests got back."""

    latencies: list[float] = field(default_factory=list)  # seconds, requests answered 200
    statuses: Counter[int] = field(default_factory=Counter)
    accepted: int = 0  # events the 200 answers said were accepted
    rejected: int = 0  # messages a 200 answer reported as rejected or declined
    failures: Counter[str] = field(default_factory=Counter)  # requests without an answer
    samples: list[str] = field(default_factory=list)  # non-200 answers and failures, a few
    first_send: float = math.inf
    last_answer: float = 0.0
    cpu_seconds: float = 0.0  # the generator processes' own

    def merge(self, other: Tally) -> None:
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.failures.update(other.failures)
        self.samples += other.samples
        self.first_send = min(self.first_send, other.first_send)
        self.last_answer = max(self.last_answer, other.last_answer)
        self.cpu_seconds += other.cpu_seconds

    @property
    def seconds(self) -> float:
        return max(self.last_answer - self.first_send, 1e-9)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    @property
    def not_ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != 200) + sum(self.failures.values())

    def record(self, status: int, body: bytes, began: float, answered: float) -> None:
        self.statuses[status] += 1
        self.first_send = min(self.first_send, began)
        self.last_answer = max(self.last_answer, answered)
        if status != 200:
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append(f"HTTP {status}: {body[:300].decode(errors='replace')}")
            return
        self.latencies.append(answered - began)
        answer = json.loads(body)
        self.accepted += answer["accepted"]
        self.rejected += len(answer.get("rejected", [])) + answer.get("declined", 0)

    def fail(self, exc: BaseException) -> None:
        self.failures[type(exc).__name__] += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(f"no answer: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class GeneratorSpec:
    index: int
    phase: int
    port: int
    write_key: str
    connections: int
    seconds: float
    events_per_second: float | None  # None: as fast as the server answers


def request_templates(spec: GeneratorSpec) -> list[bytes]:
    """Whole HTTP requests (head and body) with the token placeholder in their message ids."""
    credentials = base64.b64encode(f"{spec.write_key}:".encode()).decode()
    return [
        (f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:{spec.port}\r\nAuthorization: Basic {credentials}\r\n"
         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        for body in batch_bodies(spec.index, datetime.now(UTC))
    ]


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes, bool]:
    """Send one request; its status, body and whether the connection stays open."""
    writer.write(request)
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = dict(line.lower().split(":", 1) for line in head[1:] if line)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").strip() != "close"


async def send_batches(
    spec: GeneratorSpec, templates: list[bytes], numbers: Iterator[int], first_due: float, interval: float,
    deadline: float, tally: Tally, acks: Any,
) -> None:
    """One keep-alive connection: a request, its answer, the next (every ``interval`` s if rate-limited)."""
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    sent = 0
    while True:
        due = first_due + sent * interval
        if max(due, time.monotonic()) >= deadline:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        number = next(numbers)
        token = batch_token(spec.phase, spec.index, number)
        request = templates[number % len(templates)].replace(PLACEHOLDER.encode(), token.encode())
        sent += 1
        began = time.monotonic()
        try:
            if streams is None:
                streams = await asyncio.open_connection("127.0.0.1", spec.port)
            status, body, keep_alive = await asyncio.wait_for(exchange(*streams, request), REQUEST_TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
            tally.fail(exc)
            if streams is not None:
                streams[1].close()
            streams = None
            continue
        answered = time.monotonic()
        tally.record(status, body, began, answered)
        if status == 200 and acks is not None:
            acks.put((marker_id(token), began, answered))
        if not keep_alive:
            streams[1].close()
            streams = None
    if streams is not None:
        streams[1].close()


async def generate(spec: GeneratorSpec, templates: list[bytes], acks: Any) -> Tally:
    tally = Tally()
    numbers = itertools.count()
    start = time.monotonic()
    # Rate-limited, each connection sends every `interval` s, the connections evenly staggered.
    interval = spec.connections * BATCH_EVENTS / spec.events_per_second if spec.events_per_second else 0.0
    await asyncio.gather(*(
        send_batches(spec, templates, numbers, start + interval * j / spec.connections, interval,
                     start + spec.seconds, tally, acks)
        for j in range(spec.connections)
    ))
    return tally


def generator_process(spec: GeneratorSpec, ready: Any, go: EventFlag, results: Any, acks: Any) -> None:
    """Entry point of a load-generator process: build the requests, wait for the go, send."""
    templates = request_templates(spec)
    ready.put(spec.index)
    go.wait()
    cpu_before = time.process_time()
    tally = asyncio.run(generate(spec, templates, acks))
    tally.cpu_seconds = time.process_time() - cpu_before
    results.put(tally)


class Load:
    """Generator processes for one phase, started together."""

    def __init__(
        self, server: Server, *, phase: int, seconds: float, concurrency: int, processes: int,
        events_per_second: float | None = None, acks: Any = None,
    ) -> None:
        self.context = multiprocessing.get_context("spawn")
        processes = min(processes, concurrency)
        self.specs = [
            GeneratorSpec(
                index=index, phase=phase, port=server.port, write_key=server.write_key,
                connections=concurrency // processes + (index < concurrency % processes),
                seconds=seconds,
                events_per_second=None if events_per_second is None else events_per_second / processes,
            )
            for index in range(processes)
        ]
        self.seconds = seconds
        self.acks = acks
        self.results = self.context.Queue()
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.started_at = 0.0

    def start(self) -> None:
        ready, go = self.context.Queue(), self.context.Event()
        for spec in self.specs:
            process = self.context.Process(target=generator_process, args=(spec, ready, go, self.results, self.acks))
            process.start()
            self.processes.append(process)
        for _ in self.specs:
            ready.get(timeout=300)
        self.started_at = time.monotonic()
        go.set()

    @property
    def ends_at(self) -> float:
        return self.started_at + self.seconds

    def tally(self) -> Tally:
        """Wait for every generator (the last answers come in after ``ends_at``) and merge."""
        total = Tally()
        for _ in self.specs:
            total.merge(self.results.get(timeout=self.seconds + REQUEST_TIMEOUT + 60))
        for process in self.processes:
            process.join()
        return total


# -- phases -----------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def describe(name: str, tally: Tally, seconds: float) -> None:
    latencies = tally.latencies
    print(f"{name}: {tally.accepted:,} events acknowledged in {tally.seconds:.1f} s ({seconds:.0f} s of sending) "
          f"= {tally.rate:,.0f} events/s; {len(latencies):,} requests answered 200; latency ms "
          f"p50 {ms(percentile(latencies, 0.5))}  p99 {ms(percentile(latencies, 0.99))}  "
          f"max {ms(max(latencies, default=math.nan))}")
    not_ok = {str(status): count for status, count in sorted(tally.statuses.items()) if status != 200}
    print(f"{name}: non-200 answers {tally.not_ok:,} (by status {not_ok or '{}'}, without answer {dict(tally.failures) or '{}'})"
          + (f"; messages rejected or declined inside 200 answers {tally.rejected:,}" if tally.rejected else ""))
    for sample in tally.samples:
        print(f"    {sample}")


@dataclass
class PeakResult:
    tally: Tally
    server_cores: tuple[float, float]  # CPU seconds per second of the server and its children, meanwhile
    machine_cores: float  # of every process on the machine, meanwhile
    stored_per_second: float  # by the intake worker, while the generators ran
    commits: int  # group commits (one write + fsync each) of the intake log
    max_lag: int
    end_lag: int
    drain_seconds: float


def run_peak(server: Server, seconds: float, concurrency: int, processes: int) -> PeakResult:
    load = Load(server, phase=1, seconds=seconds, concurrency=concurrency, processes=processes)
    before = server.metrics()
    load.start()
    front_before, store_before = server.cpu_seconds()
    machine_before, measured_from = machine_busy_seconds(), time.monotonic()
    max_lag = 0
    while time.monotonic() < load.ends_at:
        time.sleep(min(1.0, max(0.0, load.ends_at - time.monotonic())))
        max_lag = max(max_lag, server.lag())
    tally = load.tally()
    front_after, store_after = server.cpu_seconds()
    machine_after, measured = machine_busy_seconds(), time.monotonic() - measured_from
    machine_cores = (machine_after - machine_before) / measured
    server_cores = ((front_after - front_before) / measured, (store_after - store_before) / measured)
    metrics = server.metrics()
    end_lag = int(metrics["footfall_intake_lag_records"])
    stored, commits = (metrics[name] - before[name] for name in ("footfall_events_stored_total", "footfall_intake_commits_total"))
    drain_seconds = wait_for_drain(server)
    return PeakResult(tally, server_cores, machine_cores, stored / tally.seconds, int(commits), max(max_lag, end_lag), end_lag, drain_seconds)


@dataclass
class FreshnessResult:
    tally: Tally
    freshness: list[float]  # seconds from a batch's 200 to its marker being queryable
    unseen: int  # acknowledged markers never seen before the timeout
    end_lag: int  # intake records not yet stored when the generators stopped


def run_freshness(
    server: Server, seconds: float, concurrency: int, processes: int, events_per_second: float,
    settle_timeout: float = 60.0, phase: int = 2,
) -> FreshnessResult:
    acks = multiprocessing.get_context("spawn").Queue()
    load = Load(server, phase=phase, seconds=seconds, concurrency=concurrency, processes=processes,
                events_per_second=events_per_second, acks=acks)
    load.start()
    pending: dict[str, tuple[float, float]] = {}  # marker: when its request was sent, answered
    freshness: list[float] = []
    markers = f"bench-{phase:x}%-{BATCH_EVENTS - 1:03d}"  # this phase's batches' last message ids

    def poll() -> None:
        while True:
            try:
                marker, sent, acknowledged = acks.get_nowait()
            except queue.Empty:
                break
            pending[marker] = (sent, acknowledged)
        if not pending:
            return
        # The batches waiting were received after the oldest was sent: the bound lets
        # the store skip every older row group, so a poll reads only the last
        # seconds of events and its text stays the same size however many
        # batches wait. (A list of the waiting ids grows with the lag, and
        # parsing it cost the server more than the scan.)
        asked = time.monotonic()
        first_sent = min(sent for sent, _ in pending.values())
        oldest = datetime.now(UTC) - timedelta(seconds=asked - first_sent + CLOCK_SLACK_SECONDS)
        query = (f"SELECT event_id FROM events WHERE received_at >= TIMESTAMPTZ '{iso(oldest)}'"
                 f" AND event_id LIKE '{markers}'")
        for (event_id,) in server.sql(query):
            times = pending.pop(event_id, None)
            if times is not None:
                freshness.append(asked - times[1])

    def poll_until(done: Callable[[], bool], deadline: float) -> None:
        while not done() and time.monotonic() < deadline:
            tick = time.monotonic()
            poll()
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - tick)))

    poll_until(lambda: False, load.ends_at)
    tally = load.tally()
    end_lag = server.lag()
    poll_until(lambda: not pending and acks.empty(), time.monotonic() + settle_timeout)
    return FreshnessResult(tally, freshness, len(pending), end_lag)


@dataclass
class CeilingResult:
    events: int
    door_per_second: float  # admit_batch + encode_record, one core
    parse_per_second: float  # decode_record + unpack + rows_to_table, one core
    insert_per_second: float
    pipeline_per_second: float


def ceiling_bodies(events: int, processes: int) -> list[bytes]:
    """The generators' bodies, in the order they send them, with their own unique ids."""
    sent_at = datetime.now(UTC)
    templates = [batch_bodies(generator, sent_at) for generator in range(processes)]
    bodies = []
    for number in range(max(1, events // BATCH_EVENTS)):
        generator = number % processes
        token = batch_token(CEILING_PHASE, generator, number)
        template = templates[generator][(number // processes) % TEMPLATES_PER_GENERATOR]
        bodies.append(template.replace(PLACEHOLDER.encode(), token.encode()))
    return bodies


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def door_check(body: bytes) -> bytes:
    """What the collector does with a body besides HTTP: check it at the door, encode the log record."""
    admission = admit_batch(body, DEFAULT_MAX_MESSAGE_BYTES, datetime.now(UTC))
    return encode_record(IntakeBatch(
        source="bench", key_id="bench", received_at=datetime.now(UTC), sent_at=admission.sent_at,
        client_ip="127.0.0.1", messages=admission.accepted, rejected=admission.rejected, declined=admission.declined,
    ))


NO_PLANS = PlanBook.of([])


def worker_parse(record: bytes) -> pa.Table:
    """What the intake worker does with a log record before the pipeline: decode, normalise, tabulate."""
    return unpack_records([(0, record)], NO_PLANS, project_id="default", anonymize_all_ips=False).table


def run_ceiling(events: int, processes: int, workdir: Path) -> CeilingResult:
    bodies = ceiling_bodies(events, processes)
    count = len(bodies) * BATCH_EVENTS
    records: list[bytes] = []
    door_seconds = timed(lambda: records.extend(door_check(body) for body in bodies))
    tables: list[pa.Table] = []
    parse_seconds = timed(lambda: tables.extend(worker_parse(record) for record in records))
    table = pa.concat_tables(tables)
    chunks = [table.slice(offset, CHUNK_ROWS) for offset in range(0, table.num_rows, CHUNK_ROWS)]

    def write_all(write: Callable[[pa.Table], object]) -> None:
        for chunk in chunks:
            write(chunk)

    with Database.open(workdir / "insert") as database:
        insert_seconds = timed(lambda: write_all(lambda chunk: database.insert("events", chunk)))
        assert database.query("SELECT count(*) FROM events").rows[0][0] == count
    with Database.open(workdir / "pipeline") as database:
        pipeline = Pipeline(database)
        pipeline_seconds = timed(lambda: write_all(pipeline.ingest))
        assert database.query("SELECT count(*) FROM events").rows[0][0] == count
    return CeilingResult(count, count / door_seconds, count / parse_seconds, count / insert_seconds, count / pipeline_seconds)


# -- the run ----------------------------------------------------------------------------


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the peak phase (default 20)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight, over all generators (default 16)")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--quick", action="store_true", help="a ~5 s peak and shorter other phases")
    parser.add_argument("--second-rate", type=float, default=None,
                        help="events/s of the second freshness phase (default: half the worker's drain rate, "
                             "at most half the peak)")
    options = parser.parse_args()
    peak_seconds = 5.0 if options.quick else options.duration
    warmup_seconds, freshness_seconds = (1.0, 4.0) if options.quick else (2.0, 10.0)
    ceiling_events = 100_000 if options.quick else 250_000

    workdir = Path(tempfile.mkdtemp(prefix="footfall-collector-bench-"))
    server = Server(workdir / "server")
    try:
        server.start()
        print(f"# footfall serve on port {server.port}, pid {server.process.pid if server.process else '?'}; "
              f"{os.cpu_count()} cores shared with {options.processes} generator processes "
              f"(load average before the run {os.getloadavg()[0]:.2f}); "
              f"{options.concurrency} requests in flight; {BATCH_EVENTS} events per batch, "
              f"{len(batch_bodies(0, datetime.now(UTC))[0]) // BATCH_EVENTS} bytes per event on average")

        warmup = Load(server, phase=0, seconds=warmup_seconds, concurrency=options.concurrency, processes=options.processes)
        warmup.start()
        warmup_tally = warmup.tally()
        wait_for_drain(server)
        print(f"warm-up: {warmup_tally.accepted:,} events acknowledged, {warmup_tally.not_ok} non-200")

        peak = run_peak(server, peak_seconds, options.concurrency, options.processes)
        describe("peak", peak.tally, peak_seconds)
        print(f"peak: intake worker stored {peak.stored_per_second:,.0f} events/s meanwhile; intake lag "
              f"max {peak.max_lag:,} records (sampled every 1 s), {peak.end_lag:,} at the end, drained in {peak.drain_seconds:.2f} s")
        print(f"peak: {peak.commits:,} group commits, {len(peak.tally.latencies) / max(peak.commits, 1):.1f} batches each; "
              f"CPU used, in cores: server {peak.server_cores[0]:.2f} + its store process {peak.server_cores[1]:.2f}, "
              f"generators {peak.tally.cpu_seconds / peak.tally.seconds:.2f}; whole machine {peak.machine_cores:.2f} of {os.cpu_count()}")
        if peak.tally.accepted == 0:
            raise SystemExit("no events were acknowledged in the peak phase; see the server log above")

        half_rate = peak.tally.rate / 2
        fresh = run_freshness(server, freshness_seconds, options.concurrency, options.processes, half_rate)
        describe(f"freshness (target {half_rate:,.0f} events/s)", fresh.tally, freshness_seconds)
        freshness_p99 = percentile(fresh.freshness, 0.99)
        print(f"freshness: 200 → queryable, ms (upper bounds, {POLL_SECONDS * 1000:.0f} ms polls) over "
              f"{len(fresh.freshness):,} batches: p50 {ms(percentile(fresh.freshness, 0.5))}  p99 {ms(freshness_p99)}  "
              f"max {ms(max(fresh.freshness, default=math.nan))}; never seen {fresh.unseen}; "
              f"intake lag when the generators stopped {fresh.end_lag:,} records")

        # The same at half the rate the worker drained the backlog at after the
        # peak (what freshness is when the worker keeps up), or at a rate asked for.
        wait_for_drain(server)
        drain_rate = peak.end_lag * BATCH_EVENTS / peak.drain_seconds if peak.drain_seconds > 0 else half_rate
        kept_rate = options.second_rate or min(half_rate, drain_rate / 2)
        kept = run_freshness(server, freshness_seconds, options.concurrency, options.processes, kept_rate, phase=3)
        why = "as asked" if options.second_rate else "half the worker's drain rate"
        describe(f"freshness (at {kept_rate:,.0f} events/s, {why})", kept.tally, freshness_seconds)
        print(f"freshness: 200 → queryable, ms, at {kept_rate:,.0f} events/s over {len(kept.freshness):,} batches: "
              f"p50 {ms(percentile(kept.freshness, 0.5))}  p99 {ms(percentile(kept.freshness, 0.99))}  "
              f"max {ms(max(kept.freshness, default=math.nan))}; never seen {kept.unseen}; "
              f"intake lag when the generators stopped {kept.end_lag:,} records")

        wait_for_drain(server)
        acknowledged = warmup_tally.accepted + peak.tally.accepted + fresh.tally.accepted + kept.tally.accepted
        stored, distinct = server.sql("SELECT count(*), count(DISTINCT event_id) FROM events")[0]
        metrics = server.metrics()
        worker_notes = {name: int(metrics[f"footfall_{name}_total"])
                        for name in ("events_duplicate", "dead_lettered", "worker_failures")}
        exactly_once = stored == distinct == acknowledged
        print(f"exactly once: acknowledged {acknowledged:,}, stored {stored:,} ({distinct:,} distinct ids); worker {worker_notes}")
        stop_seconds, status = server.stop()
        problems = server.log_problems()
        print(f"server: stopped by SIGTERM in {stop_seconds:.2f} s (exit status {status}); "
              f"{len(problems)} error lines in its log" + "".join(f"\n    {line}" for line in problems[:10]))

        ceiling = run_ceiling(ceiling_events, options.processes, workdir)
        print(f"ceiling: {ceiling.events:,} of the same events in this process, one core: door check "
              f"{ceiling.door_per_second:,.0f}/s, worker parse {ceiling.parse_per_second:,.0f}/s, "
              f"Database.insert {ceiling.insert_per_second:,.0f}/s, Pipeline.ingest {ceiling.pipeline_per_second:,.0f}/s "
              f"(chunks of {CHUNK_ROWS:,})")

        peak_rate, peak_p99 = peak.tally.rate, percentile(peak.tally.latencies, 0.99)
        not_ok = warmup_tally.not_ok + peak.tally.not_ok + fresh.tally.not_ok + kept.tally.not_ok
        rows = [
            ("collector events/s (200, fsynced)", f"{peak_rate:,.0f}", f">= {TARGET_EVENTS_PER_SECOND:,}",
             verdict(peak_rate >= TARGET_EVENTS_PER_SECOND)),
            ("collector p99 latency ms", ms(peak_p99), f"< {TARGET_P99_MS:.0f}", verdict(peak_p99 * 1000 < TARGET_P99_MS)),
            ("non-200 answers (all phases)", f"{not_ok}", "0", verdict(not_ok == 0)),
            ("freshness p99 ms at half peak", ms(freshness_p99), f"< {TARGET_FRESHNESS_P99_MS:,.0f}",
             verdict(freshness_p99 * 1000 < TARGET_FRESHNESS_P99_MS and fresh.unseen == 0)),
            (f"freshness p99 ms at {kept_rate:,.0f} events/s", ms(percentile(kept.freshness, 0.99)), "", ""),
            ("stored = acknowledged, exactly once", f"{stored:,}", f"{acknowledged:,}", verdict(exactly_once)),
            ("intake lag at end of peak, records", f"{peak.end_lag:,}", "", ""),
            ("drain after peak, s", f"{peak.drain_seconds:.2f}", "", ""),
            ("collector ÷ store insert", f"{peak_rate / ceiling.insert_per_second:.2f}", "", ""),
            ("collector ÷ pipeline", f"{peak_rate / ceiling.pipeline_per_second:.2f}", "", ""),
        ]
        print()
        print(f"targets: at least {TARGET_EVENTS_PER_SECOND:,} events/s with durable acknowledgement on 2 cores, "
              f"p99 below {TARGET_P99_MS:.0f} ms; freshness p99 < 1 s at half peak ({os.cpu_count()} cores here, shared with the generators)")
        print(f"{'measure':<38} {'value':>12} {'target':>12}  result")
        for name, value, target, result in rows:
            print(f"{name:<38} {value:>12} {target:>12}  {result}")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
