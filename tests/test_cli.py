"""The CLI: helpful output, one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from footfall.cli import main
from footfall.pipeline import Pipeline
from footfall.store.database import Database
from footfall.store.schema import SCHEMA_VERSION

from .timeline import track


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        status = 0
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def store(tmp_path: Path) -> Path:
    with Database.open(tmp_path) as database:
        Pipeline(database).ingest_events(
            [track("view", "0s", anon="a"), track("view", "1m", anon="a"), track("buy", "2m", anon="b")]
        )
    return tmp_path


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for command in ("demo", "simulate", "import", "sql", "info", "serve"):
        assert command in out


def test_sql_prints_a_table_and_json(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    status, out, _ = run(capsys, "--data-dir", str(store), "sql", "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event")
    assert status == 0
    assert "buy" in out
    assert "view" in out
    assert "2 rows" in out
    status, out, _ = run(capsys, "--data-dir", str(store), "sql", "--json", "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event")
    assert [json.loads(line) for line in out.splitlines()] == [{"event": "buy", "n": 1}, {"event": "view", "n": 2}]


def test_data_dir_from_the_environment(capsys: pytest.CaptureFixture[str], store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOOTFALL_DATA_DIR", str(store))
    status, out, _ = run(capsys, "sql", "--json", "SELECT count(*) AS n FROM events")
    assert (status, json.loads(out)) == (0, {"n": 3})


def test_info_summarises(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    status, out, _ = run(capsys, "--data-dir", str(store), "info")
    assert status == 0
    assert f"schema        version {SCHEMA_VERSION}" in out
    assert "events" in out
    assert "3" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sql", "DROP TABLE events"], "only read queries are allowed"),
        (["sql", "SELECT nope FROM events"], "query failed"),
    ],
)
def test_errors_are_one_line_with_status_2(capsys: pytest.CaptureFixture[str], store: Path, args: list[str], message: str) -> None:
    status, _, err = run(capsys, "--data-dir", str(store), *args)
    assert status == 2
    assert message in err
    assert err.strip().count("\n") == 0
    assert "Traceback" not in err


def test_missing_store_is_explained(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "--data-dir", str(tmp_path / "none"), "info")
    assert status == 2
    assert "footfall demo" in err


def test_bad_config_names_the_key(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    (store / "footfall.toml").write_text('[sessions]\ngap = "30m"\n')
    status, _, err = run(capsys, "--data-dir", str(store), "info")
    assert status == 2
    assert "unknown key 'sessions.gap'" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "demo", "--users", "0")
    assert status == 2
    assert "--users" in err


def test_demo_builds_a_summarised_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "demo"
    status, out, err = run(capsys, "--data-dir", str(target), "demo", "--users", "60", "--days", "5", "--no-serve")
    assert status == 0, err
    assert "Footfall demo" in out
    assert "top events" in out
    with Database.open(target, read_only=True) as database:
        summary = database.summary()
    assert summary.events > 0
    assert summary.persons > 0
    assert summary.sessions > 0
    assert (target / "ground_truth" / "users.parquet").exists()
    # Running it again recreates the demo directory rather than piling up events.
    status, _, _ = run(capsys, "--data-dir", str(target), "demo", "--users", "60", "--days", "5", "--no-serve")
    with Database.open(target, read_only=True) as database:
        assert database.summary().events == summary.events


def test_demo_refuses_a_directory_it_did_not_make(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    status, _, err = run(capsys, "--data-dir", str(store), "demo", "--users", "5", "--days", "1", "--no-serve")
    assert status == 2
    assert "not a demo directory" in err


def test_importing_a_file_twice_stores_it_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = tmp_path / "orders.csv"
    source.write_text("uid,ts,amount\nu1,2024-01-01T10:00:00Z,9.5\nu2,2024-01-02T11:00:00Z,20\nu1,soon,1\n")
    data_dir = str(tmp_path / "data")
    args = ["--data-dir", data_dir, "import", "csv", str(source), "--map", "user_id=uid,timestamp=ts,properties.revenue=amount", "--event", "purchase"]
    status, out, err = run(capsys, *args)
    assert status == 0, err
    assert "imported 2 events from 3 rows" in out
    assert "1 rows skipped" in err
    assert "line 4" in err
    status, out, _ = run(capsys, *args)
    assert "imported 0 events" in out
    assert "skipped 2 rows whose event id is already stored" in out
    status, out, _ = run(capsys, "--data-dir", data_dir, "sql", "--json", "SELECT count(*) AS n, sum(CAST(properties->>'revenue' AS DOUBLE)) AS revenue FROM events")
    assert json.loads(out) == {"n": 2, "revenue": 29.5}
    status, _, err = run(capsys, *args, "--strict")
    assert status == 2
    assert "line 4" in err


def test_simulate_loads_or_writes_parquet(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from footfall.events import EVENT_SCHEMA

    out = tmp_path / "events.parquet"
    status, _, err = run(capsys, "simulate", "--users", "30", "--days", "3", "--out", str(out), "--truth", str(tmp_path / "truth"))
    assert status == 0, err
    written = pq.read_table(out)
    assert written.schema == EVENT_SCHEMA
    assert pq.read_table(tmp_path / "truth" / "users.parquet").num_rows == 30

    data_dir = str(tmp_path / "data")
    status, out_text, _ = run(capsys, "--data-dir", data_dir, "simulate", "--users", "30", "--days", "3")
    assert f"loaded {written.num_rows:,} events" in out_text
    status, out_text, _ = run(capsys, "--data-dir", data_dir, "simulate", "--users", "30", "--days", "3")
    assert "loaded 0 events" in out_text
    assert f"{written.num_rows:,} events of this seed were stored already" in out_text
