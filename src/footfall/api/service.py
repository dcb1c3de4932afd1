"""Everything ``footfall serve`` runs, owned by one object: the store, the
intake log, its worker, keys and tracking plans."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as MetricsCollector

from footfall.api.collector import Collector
from footfall.config import ProjectConfig
from footfall.intake.log import IntakeLog
from footfall.intake.plans import PlanBook
from footfall.intake.worker import IntakeWorker
from footfall.keys import KeyStore
from footfall.store.database import Database

INTAKE_DIR = "intake"


class Service:
    def __init__(
        self, data_dir: Path, *, config: ProjectConfig | None = None, fsync: bool = True, start_worker: bool = True
    ) -> None:
        self.data_dir = Path(data_dir)
        self.database = Database.open(self.data_dir, config=config)
        try:
            self.intake = IntakeLog(self.data_dir / INTAKE_DIR, fsync=fsync)
        except BaseException:
            self.database.close()
            raise
        self.keys = KeyStore(self.data_dir)
        self.plans = PlanBook(self.data_dir)
        self.worker = IntakeWorker(self.intake, self.database, self.plans)
        intake = self.database.config.intake
        self.collector = Collector(
            self.intake, self.keys, max_message_bytes=intake.max_message_bytes, max_batch_bytes=intake.max_batch_bytes
        )
        self._closed = threading.Lock()
        self._is_closed = False
        if start_worker:
            self.worker.start()

    def close(self) -> None:
        """Store what the log still holds, then release everything. Idempotent."""
        with self._closed:
            if self._is_closed:
                return
            self._is_closed = True
        try:
            self.worker.stop(drain=True)
        finally:
            self.intake.close()
            self.database.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ServiceMetrics(MetricsCollector):
    """Prometheus metrics read from the collector's and worker's counters at scrape time."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterable[Metric]:
        collector, worker = self.service.collector.stats, self.service.worker.stats
        requests = CounterMetricFamily("footfall_collector_requests", "Write requests answered, by HTTP status", labels=["status"])
        for status, count in sorted(collector.requests.items()):
            requests.add_metric([str(status)], count)
        yield requests
        yield CounterMetricFamily("footfall_messages_accepted", "Messages accepted at the door and made durable", value=collector.messages_accepted)
        yield CounterMetricFamily("footfall_messages_rejected", "Messages rejected at the door (sent to the dead-letter table)", value=collector.messages_rejected)
        yield CounterMetricFamily("footfall_messages_declined", "Messages dropped because their sender declined tracking", value=collector.messages_declined)
        yield CounterMetricFamily("footfall_received_bytes", "Request body bytes received (after inflating)", value=collector.bytes_received)
        yield CounterMetricFamily("footfall_events_stored", "Events written to the store by the intake worker", value=worker.events_stored)
        yield CounterMetricFamily("footfall_events_duplicate", "Events dropped as duplicates of stored ones (client retries, replays)", value=worker.duplicates)
        yield CounterMetricFamily("footfall_dead_lettered", "Messages written to the dead-letter table", value=worker.dead_lettered)
        yield CounterMetricFamily("footfall_plan_warnings", "Tracking-plan violations accepted in warn mode", value=worker.warned)
        yield CounterMetricFamily("footfall_worker_failures", "Times the worker failed to store records (retried)", value=worker.failures)
        stats = self.service.intake.stats()
        yield GaugeMetricFamily("footfall_intake_lag_records", "Intake records not yet stored", value=stats.lag)
        yield GaugeMetricFamily("footfall_intake_log_bytes", "Bytes in the intake log's segment files", value=stats.bytes)
        yield CounterMetricFamily("footfall_intake_commits", "Group commits (one write + fsync each)", value=stats.commits)
        if worker.last_processed_at is not None:
            yield GaugeMetricFamily("footfall_worker_last_processed_seconds", "Unix time the worker last stored records", value=worker.last_processed_at)
        yield GaugeMetricFamily(
            "footfall_tracking_plan_load_error", "1 when a tracking-plan file failed to load", value=1 if self.service.plans.load_error else 0
        )
