"""What a Footfall server runs, and who owns what.

- ``StoreService`` owns the store: the database, the intake worker that fills
  it, keys and tracking plans. It serves reads and admin.
- ``Service`` adds the collector and the intake log to a ``StoreService`` in
  one process: what tests and embedders use.
- ``FrontService`` is the collector side of ``footfall serve``: the intake log,
  keys and the collector, with the store side in a child process
  (``footfall worker``) that it starts, supervises, and talks to over a Unix
  socket. The split gives each side its own core: answering requests never
  waits on the interpreter lock while the worker normalises and stores.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as MetricsCollector

from footfall.api.collector import Collector
from footfall.config import ProjectConfig, load_config
from footfall.intake.log import IntakeLog, IntakeReader
from footfall.intake.plans import PlanBook
from footfall.intake.worker import IntakeWorker
from footfall.keys import KeyStore
from footfall.segments.catalog import SegmentCatalog
from footfall.segments.live import LiveSegments
from footfall.store.database import Database

INTAKE_DIR = "intake"
TOKEN_ENV = "FOOTFALL_ADMIN_TOKEN"

log = logging.getLogger("footfall.service")


class StoreService:
    def __init__(
        self,
        data_dir: Path,
        intake: IntakeLog | IntakeReader | None = None,
        *,
        config: ProjectConfig | None = None,
        start_worker: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.database = Database.open(self.data_dir, config=config)
        try:
            self.intake = intake if intake is not None else IntakeReader(self.data_dir / INTAKE_DIR)
        except BaseException:
            self.database.close()
            raise
        self.keys = KeyStore(self.data_dir)
        self.plans = PlanBook(self.data_dir)
        self.catalog = SegmentCatalog(self.data_dir)
        self.segments = LiveSegments(self.database, self.catalog)
        self.worker = IntakeWorker(self.intake, self.database, self.plans, segments=self.segments)
        self.collector: Collector | None = None
        self._close_lock = threading.Lock()
        self._closed = False
        if start_worker:
            self.worker.start()

    def metrics(self) -> list[MetricsCollector]:
        return [WorkerMetrics(self.worker, self.plans)]

    def close(self) -> None:
        """Store what the log still holds, then release everything. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.worker.stop(drain=True)
        finally:
            self.segments.close()
            self.intake.close()
            self.database.close()

    def __enter__(self) -> StoreService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Service(StoreService):
    """Collector, intake log, worker and store in one process."""

    def __init__(
        self, data_dir: Path, *, config: ProjectConfig | None = None, fsync: bool = True, start_worker: bool = True
    ) -> None:
        intake = IntakeLog(Path(data_dir) / INTAKE_DIR, fsync=fsync)
        try:
            super().__init__(data_dir, intake, config=config, start_worker=start_worker)
        except BaseException:
            intake.close()
            raise
        self.log = intake
        settings = self.database.config.intake
        self.collector = Collector(
            intake, self.keys, max_message_bytes=settings.max_message_bytes, max_batch_bytes=settings.max_batch_bytes
        )

    def metrics(self) -> list[MetricsCollector]:
        assert self.collector is not None
        return [CollectorMetrics(self.collector, self.log), *super().metrics()]

    def close(self) -> None:
        if self.collector is not None:
            self.collector.close()
        super().close()


class FrontService:
    """The collector of ``footfall serve``, with its store side in a child process."""

    def __init__(self, data_dir: Path, *, admin_token: str, fsync: bool = True) -> None:
        self.data_dir = Path(data_dir)
        config = load_config(self.data_dir)
        self.log = IntakeLog(self.data_dir / INTAKE_DIR, fsync=fsync, external_consumer=True)
        self.keys = KeyStore(self.data_dir)
        self.collector = Collector(
            self.log, self.keys,
            max_message_bytes=config.intake.max_message_bytes, max_batch_bytes=config.intake.max_batch_bytes,
        )
        self._socket_dir = _socket_dir(self.data_dir)
        self.socket_path = self._socket_dir / "store.sock"
        self.store = StoreProcess(self.data_dir, self.socket_path, admin_token)

    def start(self, timeout: float = 120.0) -> None:
        self.store.start(timeout)

    def metrics(self) -> list[MetricsCollector]:
        return [CollectorMetrics(self.collector, self.log)]

    def close(self) -> None:
        """Stop the store process (it stores what the log holds), then release the log. Idempotent."""
        try:
            self.collector.close()
            self.store.stop()
        finally:
            self.log.close()
            shutil.rmtree(self._socket_dir, ignore_errors=True)


def _socket_dir(data_dir: Path) -> Path:
    """A private folder for the store's socket, the same for the same data
    directory, so a server killed without cleaning up leaves nothing new
    behind. Under the temporary directory: socket paths are limited to about
    100 bytes."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"footfall-{os.getuid()}-{digest}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        status = folder.lstat()
        if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o077:
            return Path(tempfile.mkdtemp(prefix="footfall-"))  # not ours to use
    return folder


class StoreProcess:
    """Starts ``footfall worker`` and restarts it if it dies; it dies with us."""

    def __init__(self, data_dir: Path, socket_path: Path, admin_token: str) -> None:
        self.data_dir = data_dir
        self.socket_path = socket_path
        self.admin_token = admin_token
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.socket_path.unlink(missing_ok=True)
        command = [sys.executable, "-m", "footfall", "--data-dir", str(self.data_dir), "worker",
                   "--socket", str(self.socket_path), "--parent", str(os.getpid())]
        return subprocess.Popen(command, env={**os.environ, TOKEN_ENV: self.admin_token})

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the store process exited with status {process.returncode} while starting")
            try:
                status, _, _ = unix_request(self.socket_path, "GET", "/health", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the store process did not answer within {timeout:.0f} s")

    def start(self, timeout: float) -> None:
        from footfall.errors import StoreError

        self.process = self._spawn()
        try:
            self._wait_ready(self.process, timeout)
        except RuntimeError as exc:
            self.process.kill()
            raise StoreError(f"{exc}; its error is printed above") from None
        self._supervisor = threading.Thread(target=self._supervise, name="footfall-store-supervisor", daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            process = self.process
            if process is not None and process.poll() is not None and not self._stopping.is_set():
                self.restarts += 1
                log.error("the store process exited with status %s; restarting it", process.returncode)
                self._stopping.wait(1.0)
                if not self._stopping.is_set():
                    self.process = self._spawn()
            self._stopping.wait(0.2)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 120.0) -> None:
        """SIGTERM: the worker stores what the log holds, then exits."""
        self._stopping.set()
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the store process did not stop within %.0f s; killing it", timeout)
            process.kill()
            process.wait()


def new_admin_token() -> str:
    return secrets.token_urlsafe(32)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


class UnixConnections:
    """Keep-alive connections to the store process, reused across requests
    (a new connection per request cost more than the request itself).

    A request on a kept connection that fails before an answer is tried once
    more on a new one: the store process may have closed an idle connection or
    been restarted meanwhile.
    """

    def __init__(self, path: Path, timeout: float = 300.0, keep: int = 16) -> None:
        self.path = path
        self.timeout = timeout
        self.keep = keep
        self._idle: list[_UnixConnection] = []
        self._lock = threading.Lock()

    def request(
        self, method: str, target: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str, bytes]:
        with self._lock:
            kept = self._idle.pop() if self._idle else None
        if kept is not None:
            try:
                return self._exchange(kept, method, target, body, headers)
            except (ConnectionError, http.client.HTTPException, OSError):
                kept.close()
        return self._exchange(_UnixConnection(self.path, self.timeout), method, target, body, headers)

    def _exchange(
        self, connection: _UnixConnection, method: str, target: str, body: bytes | None, headers: dict[str, str] | None
    ) -> tuple[int, str, bytes]:
        try:
            connection.request(method, target, body=body, headers=headers or {})
            response = connection.getresponse()
            answer = response.status, response.getheader("content-type", "application/json"), response.read()
        except BaseException:
            connection.close()
            raise
        kept = False
        if not response.will_close:
            with self._lock:
                if len(self._idle) < self.keep:
                    self._idle.append(connection)
                    kept = True
        if not kept:
            connection.close()
        return answer

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def unix_request(
    path: Path, method: str, target: str, *, body: bytes | None = None,
    headers: dict[str, str] | None = None, timeout: float = 300.0,
) -> tuple[int, str, bytes]:
    """One HTTP request over a Unix socket: (status, content type, body)."""
    connection = _UnixConnection(path, timeout)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("content-type", "application/json"), response.read()
    finally:
        connection.close()


class CollectorMetrics(MetricsCollector):
    """The collector's counters and the intake log's state, read at scrape time."""

    def __init__(self, collector: Collector, intake: IntakeLog) -> None:
        self.collector = collector
        self.intake = intake

    def collect(self) -> Iterable[Metric]:
        stats = self.collector.stats
        requests = CounterMetricFamily("footfall_collector_requests", "Write requests answered, by HTTP status", labels=["status"])
        for status, count in sorted(stats.requests.items()):
            requests.add_metric([str(status)], count)
        yield requests
        yield CounterMetricFamily("footfall_messages_accepted", "Messages accepted at the door and made durable", value=stats.messages_accepted)
        yield CounterMetricFamily("footfall_messages_rejected", "Messages rejected at the door (sent to the dead-letter table)", value=stats.messages_rejected)
        yield CounterMetricFamily("footfall_messages_declined", "Messages dropped because their sender declined tracking", value=stats.messages_declined)
        yield CounterMetricFamily("footfall_received_bytes", "Request body bytes received (after inflating)", value=stats.bytes_received)
        log_stats = self.intake.stats()
        yield GaugeMetricFamily("footfall_intake_lag_records", "Intake records not yet stored", value=log_stats.lag)
        yield GaugeMetricFamily("footfall_intake_log_bytes", "Bytes in the intake log's segment files", value=log_stats.bytes)
        yield CounterMetricFamily("footfall_intake_commits", "Group commits (one write + fsync each)", value=log_stats.commits)


class WorkerMetrics(MetricsCollector):
    """The intake worker's counters, read at scrape time."""

    def __init__(self, worker: IntakeWorker, plans: PlanBook) -> None:
        self.worker = worker
        self.plans = plans

    def collect(self) -> Iterable[Metric]:
        stats = self.worker.stats
        yield CounterMetricFamily("footfall_events_stored", "Events written to the store by the intake worker", value=stats.events_stored)
        yield CounterMetricFamily("footfall_events_duplicate", "Events dropped as duplicates of stored ones (client retries, replays)", value=stats.duplicates)
        yield CounterMetricFamily("footfall_dead_lettered", "Messages written to the dead-letter table", value=stats.dead_lettered)
        yield CounterMetricFamily("footfall_plan_warnings", "Tracking-plan violations accepted in warn mode", value=stats.warned)
        yield CounterMetricFamily("footfall_worker_failures", "Times the worker failed to store records (retried)", value=stats.failures)
        yield CounterMetricFamily(
            "footfall_records_unpacked_by_helper", "Intake records normalised by the worker's unpack helpers",
            value=stats.unpacked_by_helper,
        )
        segments = self.worker.segments
        if segments is not None:
            yield CounterMetricFamily(
                "footfall_segment_changes", "segment_entered / segment_exited events written", value=segments.changes_written
            )
            yield CounterMetricFamily(
                "footfall_segment_failures", "Times the segment engine failed and was restarted from the store",
                value=segments.failures,
            )
        if stats.last_processed_at is not None:
            yield GaugeMetricFamily("footfall_worker_last_processed_seconds", "Unix time the worker last stored records", value=stats.last_processed_at)
        yield GaugeMetricFamily(
            "footfall_tracking_plan_load_error", "1 when a tracking-plan file failed to load", value=1 if self.plans.load_error else 0
        )
