"""Live profiles in Redis: the same answers as the embedded profiles, shared
with readers elsewhere, kept across restarts, and clear about Redis being down.

Each test runs against a real ``redis-server`` (Debian's package) started by
the fixture on a free port, without persistence. Where it is not installed
the tests are skipped, unless FOOTFALL_REQUIRE_REDIS is set (as .ci/run does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest
import redis

from footfall.config import EngagementSettings, ProfileSettings, ProjectConfig, parse_config
from footfall.errors import ConfigError, StoreError
from footfall.events.record import SYSTEM_EVENTS, Event, events_to_table
from footfall.identity.resolver import person_id_for
from footfall.intake.log import IntakeLog
from footfall.intake.plans import PlanBook
from footfall.intake.worker import IntakeWorker
from footfall.pipeline import Pipeline
from footfall.profiles import LiveProfiles, open_profiles
from footfall.profiles.redis import Keys, RedisProfileReader, RedisProfiles
from footfall.sdk import Client
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database
from footfall.store.duckdb_backend import DuckDBBackend

from .live import free_port, person_of, running
from .test_intake_worker import record
from .timeline import T0, identify, track

REDIS_SERVER = shutil.which("redis-server")
REQUIRED = bool(os.environ.get("FOOTFALL_REQUIRE_REDIS"))  # set by .ci/run: skipping is not an option there


@dataclass
class RedisServer:
    """A ``redis-server`` of its own: no persistence, on 127.0.0.1."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        assert REDIS_SERVER is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.directory)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {(self.directory / 'redis.log').read_text()}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer PING in {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def _redis_server(directory: Path) -> RedisServer:
    if REDIS_SERVER is None:
        if REQUIRED:
            pytest.fail("FOOTFALL_REQUIRE_REDIS is set but redis-server is missing: apt-get install redis-server")
        pytest.skip("needs redis-server (apt-get install redis-server); CI installs it")
    return RedisServer(directory)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = _redis_server(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server, emptied for each test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    return redis_server.url


def configured(url: str, **profiles: object) -> ProjectConfig:
    settings = {"windows": ["1d", "7d", "30d"], "properties": ["product_id", "category", "plan"], **profiles}
    return ProjectConfig(
        profiles=msgspec.convert({**settings, "backend": "redis", "redis_url": url}, ProfileSettings),
        engagement=EngagementSettings(recency_half_life="7d"),
    )


def duckdb(path: Path, config: ProjectConfig) -> Database:
    database = Database(DuckDBBackend(path), config)
    database.migrate()
    return database


def profile_keys(url: str) -> set[str]:
    keys = Keys("default")
    with redis.Redis.from_url(url) as client:
        return {keys.person(key) for key in client.scan_iter(match=keys.every_profile)}


def simulated() -> list[pa.Table]:
    return list(Simulation(SimulationSpec(users=60, days=12, seed=3)).batches(max_rows=700))


def latest_time(tables: list[pa.Table]) -> datetime:
    return max(max(table["timestamp"].to_pylist()) for table in tables)


@pytest.mark.parametrize("cache_size", [100_000, 7])  # 7: most batches read their persons back from Redis
def test_redis_profiles_equal_embedded_profiles_batch_for_batch(tmp_path: Path, redis_url: str, cache_size: int) -> None:
    config = configured(redis_url)
    embedded_store, redis_store = duckdb(tmp_path / "embedded.duckdb", config), duckdb(tmp_path / "redis.duckdb", config)
    embedded = LiveProfiles(embedded_store)
    in_redis = RedisProfiles(redis_store, cache_size=cache_size)
    pipelines = [Pipeline(embedded_store, profiles=embedded), Pipeline(redis_store, profiles=in_redis)]
    tables = simulated()
    for table in [*tables, tables[0].slice(0, 50)]:  # and a retry, which counts once
        for pipeline in pipelines:
            pipeline.ingest(table)
    latest = latest_time(tables)
    for now in (latest, latest - timedelta(days=3, minutes=17)):
        expected = embedded.views(now)
        assert len(expected) > 40
        assert in_redis.views(now) == expected
    assert any(view.last_values for view in expected.values())
    assert any(view.engagement_score > 0 for view in expected.values())
    assert len(in_redis.book) <= cache_size
    # Persons merged by identify have no key left: one key per stored person.
    stored = {row[0] for row in redis_store.query("SELECT DISTINCT person_id FROM events").rows}
    assert profile_keys(redis_url) == stored == set(expected)


def test_identify_merges_two_persons_and_deletes_the_old_key(tmp_path: Path, redis_url: str) -> None:
    config = configured(redis_url, windows=["1d", "7d"])
    embedded_store, redis_store = duckdb(tmp_path / "embedded.duckdb", config), duckdb(tmp_path / "redis.duckdb", config)
    embedded = LiveProfiles(embedded_store)
    in_redis = RedisProfiles(redis_store)
    pipelines = [Pipeline(embedded_store, profiles=embedded), Pipeline(redis_store, profiles=in_redis)]
    batches = [
        [track("page_view", "-3d", anon="a1", properties={"signal": "passive", "plan": "basic"}),
         track("add_to_cart", "-90m", anon="a1", properties={"product_id": "p-7"})],
        [track("purchase", "-1h", anon="a2", properties={"revenue": 40.5, "plan": "free"})],
        [identify("-50m", anon="a1", user="u1", traits={"email": "u1@example.com"}),
         identify("-40m", anon="a2", user="u1"),
         track("purchase", "-30m", user="u1", properties={"revenue": 9, "plan": "pro"})],
    ]
    for events in batches:
        for pipeline in pipelines:
            pipeline.ingest_events(events)
    [(user,)] = redis_store.query("SELECT person_id FROM identities WHERE kind = 'user' AND value = 'u1'").rows
    # a2's person was merged into a1's, which u1 joined.
    merged = person_id_for("default", "anonymous", "a2")
    assert user == person_id_for("default", "anonymous", "a1") != merged
    assert profile_keys(redis_url) == {user}
    view = in_redis.view(user, now=T0)
    assert view == embedded.view(user, now=T0)
    assert view is not None
    assert (view.user_id, view.traits, view.revenue, view.events) == ("u1", {"email": "u1@example.com"}, 49.5, 6)
    assert view.last_values == {"plan": "pro", "product_id": "p-7"}
    assert in_redis.view(merged) is None


def test_a_restart_takes_the_profiles_redis_holds_and_rebuilds_when_they_do_not_fit(database: Database, redis_url: str) -> None:
    database.config = configured(redis_url)
    tables = simulated()
    pipeline = Pipeline(database, profiles=RedisProfiles(database))
    for table in tables[:-1]:
        pipeline.ingest(table)
    now = latest_time(tables)
    written = RedisProfiles(database).views(now)
    with redis.Redis.from_url(redis_url) as client:
        client.set(Keys("default").profile("ghost"), b"{}")  # a person the store does not have
    # A membership change Footfall writes to the store itself is no profile event.
    database.insert("events", events_to_table([Event(
        event_id="change-1", project_id="default", type="track", event=SYSTEM_EVENTS[0], timestamp=now,
        received_at=datetime.now(UTC), person_id=next(iter(written)), properties="{}",
    )]))

    restarted = RedisProfiles(database).load()
    assert restarted.reused
    assert len(restarted.book) == 0  # nothing read from the store or from Redis
    assert {person: restarted.view(person, now) for person in written} == written

    # The store moved on without the profiles (a crash between the two): rebuilt.
    Pipeline(database).ingest(tables[-1])
    rebuilt = RedisProfiles(database).load(now)
    assert not rebuilt.reused
    assert rebuilt.views(now) == LiveProfiles(database).load(now).views(now)
    assert "ghost" not in profile_keys(redis_url)
    assert RedisProfiles(database).load().reused

    # Other settings: rebuilt (where the profiles are kept is not a setting of theirs).
    database.config = configured(redis_url, properties=["category"])
    changed = RedisProfiles(database).load(now)
    assert not changed.reused
    views = changed.views(now)
    assert views == LiveProfiles(database).load(now).views(now)
    assert all(set(view.last_values) <= {"category"} for view in views.values())
    database.config = configured(redis_url.replace("127.0.0.1", "localhost"), properties=["category"])
    assert RedisProfiles(database).load().reused


def test_a_reader_elsewhere_sees_each_batch_the_worker_writes(tmp_path: Path, redis_url: str) -> None:
    config = configured(redis_url)
    reader = RedisProfileReader(config)  # no store: only the settings and the URL
    assert not reader.loaded
    store = duckdb(tmp_path / "store.duckdb", config)
    pipeline = Pipeline(store, profiles=open_profiles(store))
    pipeline.ingest_events([track("page_view", "-2h", anon="r1", properties={"signal": "passive"})])
    person = person_id_for("default", "anonymous", "r1")
    assert reader.loaded
    assert reader.view(person, now=T0).counts["1d"] == {"page_view": 1}  # type: ignore[union-attr]
    pipeline.ingest_events([track("purchase", "-1h", anon="r1", properties={"revenue": 12.5})])
    assert reader.view(person, now=T0).counts["1d"] == {"page_view": 1, "purchase": 1}  # type: ignore[union-attr]
    # Another process, with its own connection.
    script = (
        "import sys, msgspec\n"
        "from datetime import datetime\n"
        "from footfall.config import ProjectConfig\n"
        "from footfall.profiles.redis import RedisProfileReader\n"
        "config = msgspec.json.decode(sys.argv[1], type=ProjectConfig)\n"
        "view = RedisProfileReader(config).view(sys.argv[2], datetime.fromisoformat(sys.argv[3]))\n"
        "sys.stdout.buffer.write(msgspec.json.encode(view))\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", script, msgspec.json.encode(config).decode(), person, T0.isoformat()],
        capture_output=True, check=True, timeout=60,
    )
    assert json.loads(answer.stdout) == json.loads(msgspec.json.encode(reader.view(person, now=T0)))


def test_redis_down_is_a_clear_error_and_the_store_catches_the_profiles_up(tmp_path: Path) -> None:
    server = _redis_server(tmp_path / "redis")  # its own server, to stop and start
    store = duckdb(tmp_path / "store.duckdb", configured(server.url))
    profiles = RedisProfiles(store)
    pipeline = Pipeline(store, profiles=profiles)
    first = [track("page_view", "-2h", anon="d1", properties={"signal": "passive"})]
    # Down at the start: nothing is stored (the intake log keeps it for a retry).
    with pytest.raises(StoreError, match=rf"Redis at {server.url} failed.*redis-server.*redis_url"):
        pipeline.ingest_events(first)
    assert store.query("SELECT count(*) FROM events").rows == [(0,)]
    server.start()
    try:
        assert pipeline.ingest_events(first).events == 1
        server.stop()
        # Down after the store took a batch: said, and the profiles are stale ...
        with pytest.raises(StoreError, match="writing the profiles of a batch"):
            pipeline.ingest_events([track("purchase", "-1h", anon="d1", properties={"revenue": 5})])
        with pytest.raises(StoreError, match="reading a profile"):
            profiles.view(person_id_for("default", "anonymous", "d1"))
        with pytest.raises(StoreError, match="catching up"):
            pipeline.ingest_events([track("page_view", "-50m", anon="d2")])
        assert store.query("SELECT count(*) FROM events").rows == [(3,)]
        # ... until Redis is back (empty: it kept nothing): the next batch rebuilds them.
        server.start()
        pipeline.ingest_events([track("purchase", "-30m", anon="d1", properties={"revenue": 7})])
        # (A load now, like the rebuild: hours older than every window from now are gone.)
        assert profiles.views(T0) == LiveProfiles(store).load().views(T0)
        assert profiles.view(person_id_for("default", "anonymous", "d1"), T0).revenue == 12  # type: ignore[union-attr]
        # Restarted between two batches, Redis comes back empty: the next batch sees it and rebuilds.
        server.stop()
        server.start()
        pipeline.ingest_events([track("purchase", "-20m", anon="d2", properties={"revenue": 1})])
        assert profiles.views(T0) == LiveProfiles(store).load().views(T0)
        assert len(profiles.views(T0)) == 2
    finally:
        server.stop()


def test_the_worker_keeps_retrying_while_redis_is_down(tmp_path: Path) -> None:
    server = _redis_server(tmp_path / "redis")
    store = duckdb(tmp_path / "store.duckdb", configured(server.url))
    with IntakeLog(tmp_path / "intake", fsync=False) as intake:
        intake.append(record([{"type": "track", "event": "viewed", "anonymousId": "w1", "messageId": "m1",
                               "timestamp": "2026-03-01T11:00:00Z"}]))
        worker = IntakeWorker(intake, store, PlanBook.of([]))
        worker.start()
        try:
            deadline = time.monotonic() + 10
            while worker.stats.failures == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert f"Redis at {server.url}" in (worker.stats.last_error or "")
            server.start()
            while intake.checkpointed != 1 and time.monotonic() < deadline + 10:
                time.sleep(0.02)
            assert intake.checkpointed == 1
            assert worker.profiles.view(person_id_for("default", "anonymous", "w1")) is not None
        finally:
            worker.stop()
            server.stop()


def test_profiles_over_http_come_from_redis(tmp_path: Path, redis_url: str) -> None:
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    (data_dir / "footfall.toml").write_text(f'[profiles]\nbackend = "redis"\nredis_url = "{redis_url}"\n')
    with running(data_dir) as live:
        with Client(live.write_key, live.url, flush_at_exit=False) as client:
            client.track("add_to_cart", {"product_id": "p-1"}, anonymous_id="visitor-1")
            client.identify("member-1", {"plan": "pro"}, anonymous_id="visitor-1")
            client.track("purchase", {"revenue": 25.0}, user_id="member-1")
            assert client.flush(timeout=30)
        live.wait_until_stored()
        person = person_of(live, "user", "member-1")
        request = urllib.request.Request(f"{live.url}/v1/profiles/{person}", headers={"Authorization": f"Bearer {live.secret_key}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            profile = json.loads(response.read())
        assert (profile["user_id"], profile["traits"], profile["events"], profile["revenue"]) == ("member-1", {"plan": "pro"}, 3, 25.0)
        assert profile["counts"]["30d"] == {"add_to_cart": 1, "identify": 1, "purchase": 1}
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(urllib.request.Request(
                f"{live.url}/v1/profiles/nobody", headers={"Authorization": f"Bearer {live.secret_key}"}), timeout=10)
        missing.value.close()
        assert missing.value.code == 404
        # By person id the front reads Redis itself; by user id the store resolves it first.
        by_user = urllib.request.Request(
            f"{live.url}/v1/profiles/member-1?kind=user", headers={"Authorization": f"Bearer {live.secret_key}"}
        )
        with urllib.request.urlopen(by_user, timeout=10) as response:
            assert json.loads(response.read())["person_id"] == person
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(
                f"{live.url}/v1/profiles/{person}", headers={"Authorization": f"Bearer {live.write_key}"}), timeout=10)
        refused.value.close()
        assert refused.value.code == 401
    # What the server wrote, any reader with the project's settings reads.
    stored = RedisProfileReader(parse_config(f'[profiles]\nredis_url = "{redis_url}"\n')).view(person)
    assert stored is not None
    assert {**msgspec.to_builtins(stored), "as_of": None} == {**profile, "as_of": None}


def test_profile_backend_settings_name_what_is_wrong(tmp_path: Path) -> None:
    for text, problem in [
        ('[profiles]\nbackend = "memcached"', "backend must be 'embedded' or 'redis', got 'memcached'"),
        ('[profiles]\nbackend = "redis"\nredis_url = "localhost:6379"', "redis_url: 'localhost:6379' is not a Redis URL"),
    ]:
        with pytest.raises(ConfigError, match="in \\[profiles\\]") as caught:
            parse_config(text, "footfall.toml")
        assert problem in str(caught.value)
    assert type(open_profiles(duckdb(tmp_path / "a.duckdb", ProjectConfig()))) is LiveProfiles
    # The password of a Redis URL stays out of messages.
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    profiles = open_profiles(duckdb(tmp_path / "b.duckdb", configured(url)))
    assert isinstance(profiles, RedisProfiles)
    with pytest.raises(StoreError) as caught:
        profiles.load()
    assert "hunter2" not in str(caught.value)
    assert "redis://:***@127.0.0.1" in str(caught.value)
