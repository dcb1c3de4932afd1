"""Live profile reads: ``GET /v1/profiles/{id}`` latency on a running server.

One run: a store is filled with simulated traffic (``--users`` shoppers over
30 days, through the pipeline), ``footfall serve`` starts on it and loads the
profiles, then one client on one keep-alive connection asks for random
persons' profiles, ``--requests`` times, and in the same run as often for
``GET /health``, which takes the same way through the server (front process,
Unix socket, store process) and does no work: the peer. Printed: p50 / p99 /
max of both, the ratio of the p99s, and the target (p99 under 5 ms).

With ``--backend redis`` a ``redis-server`` of its own (Debian's package)
keeps the profiles, and the run also times reads straight from Redis, as
another API process would make them (``RedisProfileReader.view``).

    .venv/bin/python bench/profiles_read.py                    # 20,000 users (about 1.1M events)
    .venv/bin/python bench/profiles_read.py --users 2000 --requests 2000
    .venv/bin/python bench/profiles_read.py --users 2000 --backend redis
"""

from __future__ import annotations

import argparse
import http.client
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from collector_load import Server, free_port  # type: ignore[import-not-found]
from footfall.config import init_data_dir, load_config
from footfall.pipeline import Pipeline
from footfall.profiles.redis import RedisProfileReader
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database

TARGET_P99_MS = 5.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed_gets(connection: http.client.HTTPConnection, paths: list[str], headers: dict[str, str]) -> list[float]:
    latencies = []
    for path in paths:
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            raise SystemExit(f"GET {path} answered {response.status}: {body[:300]!r}")
    return latencies


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server without persistence on a free port, answering PING."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("--backend redis needs redis-server (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(500):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    client.close()
    return process, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--backend", choices=["embedded", "redis"], default="embedded")
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="footfall-profiles-bench-"))
    redis_process = None
    try:
        data_dir = workdir / "server"
        server = Server(data_dir)  # creates the keys in the new directory
        if options.backend == "redis":
            redis_process, redis_url = start_redis(workdir)
            (data_dir / "footfall.toml").write_text(f'[profiles]\nbackend = "redis"\nredis_url = "{redis_url}"\n')
        init_data_dir(data_dir)
        started = time.perf_counter()
        with Database.open(data_dir) as database:
            pipeline = Pipeline(database)
            events = sum(pipeline.ingest(batch).events for batch in Simulation(SimulationSpec(users=options.users)).batches())
            persons = [row[0] for row in database.query("SELECT person_id FROM persons").rows]
        print(f"# {events:,} events of {len(persons):,} persons stored in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        server.start()
        headers = {"Authorization": f"Bearer {server.secret_key}"}
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        while True:  # profiles are loaded by the store process after it starts
            connection.request("GET", f"/v1/profiles/{persons[0]}", headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                break
            if time.perf_counter() - started > 300:
                raise SystemExit(f"profiles did not load in 300 s (last answer {response.status})")
            time.sleep(0.05)
        print(f"# server up and profiles loaded in {time.perf_counter() - started:.1f} s")
        rng = random.Random(7)
        profile_paths = [f"/v1/profiles/{rng.choice(persons)}" for _ in range(options.requests)]
        timed_gets(connection, profile_paths[:200], headers)  # warm-up
        profiles = timed_gets(connection, profile_paths, headers)
        health = timed_gets(connection, ["/health"] * options.requests, headers)
        server.stop()
        print(f"{'route':<24}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
        for name, values in (("GET /v1/profiles/{id}", profiles), ("GET /health (peer)", health)):
            print(f"{name:<24}{percentile(values, 0.5) * 1000:>10.2f}{percentile(values, 0.99) * 1000:>10.2f}{max(values) * 1000:>10.2f}")
        if options.backend == "redis":
            reader = RedisProfileReader(load_config(data_dir))
            direct = []
            for path in profile_paths:
                started = time.perf_counter()
                reader.view(path.rsplit("/", 1)[1])
                direct.append(time.perf_counter() - started)
            print(f"{'reader.view (Redis)':<24}{percentile(direct, 0.5) * 1000:>10.2f}"
                  f"{percentile(direct, 0.99) * 1000:>10.2f}{max(direct) * 1000:>10.2f}")
        p99 = percentile(profiles, 0.99) * 1000
        print(f"profile p99 / peer p99: {p99 / (percentile(health, 0.99) * 1000):.2f}; "
              f"target p99 < {TARGET_P99_MS:.0f} ms: {'met' if p99 < TARGET_P99_MS else 'MISSED'} ({p99:.2f} ms)")
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
