"""Importers: JSON lines, CSV and Parquet with a mapping, and the two real data sets.

Stored results are read back from a real store; data set counts are checked
against the source files read independently (plain ``csv``/``str.split``).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from footfall.errors import ImportRowError
from footfall.importers import (
    CDNOW_MASTER,
    MAX_REJECTED_EXAMPLES,
    MOVIELENS_100K,
    ImportReport,
    ImportSource,
    MappingError,
    SourceError,
    column_mapping,
    parse_mapping,
    read_cdnow,
    read_csv,
    read_jsonl,
    read_movielens,
    read_parquet,
    run_import,
    tabular,
)
from footfall.importers.convert import json_values
from footfall.importers.datasets import PackagedFile
from footfall.importers.source import row_event_ids
from footfall.pipeline.ingest import Pipeline
from footfall.store.clickhouse_backend import ClickHouseBackend
from footfall.store.database import Database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "data")
    yield database
    database.close()


def stored(database: Database, columns: str = "event, user_id, anonymous_id, properties") -> list[tuple[Any, ...]]:
    return database.query(f"SELECT {columns} FROM events ORDER BY timestamp, event_id").rows


def events_of(source: ImportSource) -> tuple[list[dict[str, object]], list[ImportRowError]]:
    rows: list[dict[str, object]] = []
    rejected: list[ImportRowError] = []
    for chunk in source:
        rows.extend(chunk.events.to_pylist())
        rejected.extend(chunk.rejected)
    return rows, rejected


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- mappings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("event=action,user_id=uid,timestamp=ts", {"event": "action", "user_id": "uid", "timestamp": "ts"}),
        (" event = action , properties.revenue=amount,", {"event": "action", "properties.revenue": "amount"}),
        ("properties.a.b=col", {"properties.a.b": "col"}),
    ],
)
def test_parse_mapping(text: str, expected: dict[str, str]) -> None:
    assert parse_mapping(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("event", "write FIELD=COLUMN"),
        ("event=", "write FIELD=COLUMN"),
        ("=action", "write FIELD=COLUMN"),
        ("", "empty mapping"),
        ("evnt=action", "unknown field 'evnt'"),
        ("person_id=p", "persons are resolved"),
        ("properties=props", "properties.NAME"),
        ("properties.=x", "name the property"),
        ("event=a,event=b", "mapped twice"),
    ],
)
def test_parse_mapping_errors(text: str, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        parse_mapping(text)


@pytest.mark.parametrize(
    ("mapping", "options", "message"),
    [
        ({"user_id": "u", "timestamp": "t"}, {}, "map event=COLUMN, or give a constant event name"),
        ({"event": "e", "user_id": "u", "timestamp": "t"}, {"event_name": "buy"}, "give one of them"),
        ({"event": "e", "user_id": "u"}, {}, "map timestamp=COLUMN"),
        ({"event": "e", "timestamp": "t"}, {}, "user_id=COLUMN or anonymous_id=COLUMN"),
        ({"event": "e", "user_id": "u", "timestamp": "t"}, {"timestamp_unit": "minutes"}, "unknown timestamp unit"),
    ],
)
def test_column_mapping_requirements(mapping: dict[str, str], options: dict[str, str], message: str) -> None:
    with pytest.raises(MappingError, match=message):
        column_mapping(mapping, **options)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["12.50", "3", "-0.5", "1e3"], [12.5, 3, -0.5, 1000.0]),
        (["02134", "1234567890123456789", "12.", "+5", "NaN"], ["02134", "1234567890123456789", "12.", "+5", "NaN"]),
        (["true", "False", "yes"], [True, False, "yes"]),
        (['say "hi"\n', "back\\slash", "\x01"], ['say "hi"\n', "back\\slash", "\x01"]),
    ],
)
def test_text_property_values_keep_their_type(values: list[str], expected: list[object]) -> None:
    encoded = json_values(pa.array(values)).to_pylist()
    assert [json.loads(value) for value in encoded] == expected


def test_generated_event_ids_are_per_source_and_line() -> None:
    ids = row_event_ids("a.csv", np.array([2, 3])).to_pylist()
    assert ids == row_event_ids("a.csv", np.array([2, 3])).to_pylist()
    assert len(set(ids)) == 2
    assert ids[0].endswith("-000000000002")
    assert set(ids).isdisjoint(row_event_ids("b.csv", np.array([2, 3])).to_pylist())


# -- CSV -------------------------------------------------------------------------

ORDERS = (
    "uid,action,ts,amount,zip,note\n"  # line 1
    "u1,view,2024-01-01T10:00:00Z,,02134,plain\n"  # 2
    'u1,buy,2024-01-01T10:05:00Z,12.50,02134,"two\n'  # 3
    'lines"\n'  # 4
    "u2,buy,yesterday,3,x,\n"  # 5: bad timestamp
    ",view,2024-01-01T11:00:00Z,1,,\n"  # 6: nobody
    "\n"  # 7: blank
    "u3,view,2024-01-01 12:00:00,,,\n"  # 8
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_mapping_types_properties_and_reports_physical_lines(tmp_path: Path, db: Database) -> None:
    file = write(tmp_path / "orders.csv", ORDERS)
    source = read_csv(
        file,
        "event=action,user_id=uid,timestamp=ts,properties.revenue=amount,properties.zip=zip,properties.note=note",
    )
    report = run_import(Pipeline(db), source)

    assert (report.rows_read, report.imported, report.rejected_count) == (5, 3, 2)
    assert [(error.line, error.problem) for error in report.rejected] == [
        (5, "timestamp: cannot read 'yesterday' as a time; expected ISO 8601 (2024-05-01T12:00:00Z) or epoch seconds/milliseconds"),
        (6, "user_id: empty; every event needs someone who did it"),
    ]
    rows = stored(db, "event, user_id, timestamp, properties, type")
    assert [(event, user, when, json.loads(properties), kind) for event, user, when, properties, kind in rows] == [
        ("view", "u1", utc("2024-01-01T10:00:00"), {"zip": "02134", "note": "plain"}, "track"),
        ("buy", "u1", utc("2024-01-01T10:05:00"), {"revenue": 12.5, "zip": "02134", "note": "two\nlines"}, "track"),
        ("view", "u3", utc("2024-01-01T12:00:00"), {}, "track"),
    ]


def test_csv_constant_event_name(tmp_path: Path) -> None:
    file = write(tmp_path / "sales.csv", "customer,when,total\nc1,2024-03-01T00:00:00Z,9.99\n")
    rows, rejected = events_of(
        read_csv(file, {"user_id": "customer", "timestamp": "when", "properties.revenue": "total"}, event_name="purchase")
    )
    assert rejected == []
    assert [(row["event"], row["user_id"], json.loads(str(row["properties"]))) for row in rows] == [
        ("purchase", "c1", {"revenue": 9.99})
    ]


def test_csv_unknown_column_fails_before_anything_is_stored(tmp_path: Path, db: Database) -> None:
    file = write(tmp_path / "orders.csv", ORDERS)
    with pytest.raises(MappingError) as caught:
        read_csv(file, "event=action,user_id=user,timestamp=ts")
    assert "no column 'user' (for user_id)" in str(caught.value)
    assert "its columns are: uid, action, ts, amount, zip, note" in str(caught.value)
    assert db.query("SELECT count(*) FROM events").rows == [(0,)]


def test_csv_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no CSV file at"):
        read_csv(tmp_path / "nope.csv", "event=a,user_id=b,timestamp=c")
    with pytest.raises(SourceError, match="is empty"):
        read_csv(write(tmp_path / "empty.csv", ""), "event=a,user_id=b,timestamp=c")


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("1704103200", None, "2024-01-01T10:00:00"),  # seconds
        ("1704103200000", None, "2024-01-01T10:00:00"),  # milliseconds
        ("1704103200.25", None, "2024-01-01T10:00:00.250"),  # fractional seconds
        ("1704103200000000", None, "2024-01-01T10:00:00"),  # microseconds
        ("1704103200000", "ms", "2024-01-01T10:00:00"),
        ("1704103200", "s", "2024-01-01T10:00:00"),
        ("2024-01-01T11:00:00+01:00", None, "2024-01-01T10:00:00"),
        ("2024-01-01T10:00:00.123456789Z", None, "2024-01-01T10:00:00.123"),
        ("2024-01-01", None, "2024-01-01T00:00:00"),
    ],
)
def test_csv_timestamp_forms(tmp_path: Path, value: str, unit: str | None, expected: str) -> None:
    file = write(tmp_path / "t.csv", f"u,ts\nu1,{value}\n")
    rows, rejected = events_of(read_csv(file, "user_id=u,timestamp=ts", event_name="e", timestamp_unit=unit))
    assert rejected == []
    assert rows[0]["timestamp"] == utc(expected)
    assert rows[0]["received_at"] == rows[0]["timestamp"]


def test_csv_epoch_in_the_wrong_unit_is_out_of_range(tmp_path: Path) -> None:
    file = write(tmp_path / "t.csv", "u,ts\nu1,1704103200000\n")
    rows, rejected = events_of(read_csv(file, "user_id=u,timestamp=ts", event_name="e", timestamp_unit="s"))
    assert rows == []
    assert str(rejected[0]) == "line 2: timestamp: '1704103200000' is outside 1970-2199"


def test_csv_timestamp_format(tmp_path: Path) -> None:
    file = write(tmp_path / "t.csv", "u,ts\nu1,31/12/2023 23:59\nu2,2023-12-31\n")
    rows, rejected = events_of(
        read_csv(file, "user_id=u,timestamp=ts", event_name="e", timestamp_format="%d/%m/%Y %H:%M")
    )
    assert [row["timestamp"] for row in rows] == [utc("2023-12-31T23:59:00")]
    assert [(error.line, error.problem) for error in rejected] == [
        (3, "timestamp: cannot read '2023-12-31' as a time; expected the format '%d/%m/%Y %H:%M'")
    ]


def test_csv_reimport_gives_the_same_event_ids(tmp_path: Path) -> None:
    file = write(tmp_path / "orders.csv", ORDERS)
    mapping = "event=action,user_id=uid,timestamp=ts"
    first, _ = events_of(read_csv(file, mapping))
    again, _ = events_of(read_csv(file, mapping))
    assert [row["event_id"] for row in first] == [row["event_id"] for row in again]
    assert len({row["event_id"] for row in first}) == 3
    copy = write(tmp_path / "other.csv", ORDERS)
    elsewhere, _ = events_of(read_csv(copy, mapping))
    assert {row["event_id"] for row in first}.isdisjoint(row["event_id"] for row in elsewhere)


def test_csv_event_id_column_is_used(tmp_path: Path) -> None:
    file = write(tmp_path / "t.csv", "id,u,ts\nabc-1,u1,2024-01-01T00:00:00Z\n,u2,2024-01-01T00:00:00Z\n")
    rows, rejected = events_of(read_csv(file, "event_id=id,user_id=u,timestamp=ts", event_name="e"))
    assert [row["event_id"] for row in rows] == ["abc-1"]
    assert [str(error) for error in rejected] == ["line 3: event_id: empty"]


def test_csv_context_columns_and_derived_fields(tmp_path: Path) -> None:
    agent = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
    file = write(
        tmp_path / "t.csv",
        f'a,ts,url,ua,x\nanon,2024-01-01T00:00:00Z,https://shop.example/cart?x=1,"{agent}",10.5\n'
        "anon,2024-01-01T00:00:01Z,,,left\n",
    )
    rows, rejected = events_of(
        read_csv(file, "anonymous_id=a,timestamp=ts,url=url,user_agent=ua,x=x", event_name="click")
    )
    assert [(row["path"], row["device_type"], row["os"], row["x"], row["user_id"]) for row in rows] == [
        ("/cart", "mobile", "iOS", 10.5, None)
    ]
    assert [str(error) for error in rejected] == ["line 3: x: 'left' is not a number"]


def test_csv_numbers_out_of_range_are_rejected(tmp_path: Path) -> None:
    file = write(tmp_path / "t.csv", "u,ts,vw\nu1,2024-01-01,1280\nu2,2024-01-01,1e12\nu3,1e30,1\n")
    rows, rejected = events_of(read_csv(file, "user_id=u,timestamp=ts,viewport_width=vw", event_name="e"))
    assert [row["viewport_width"] for row in rows] == [1280]
    assert [str(error) for error in rejected] == [
        "line 3: viewport_width: '1e12' is not a 32-bit integer",
        "line 4: timestamp: '1e30' is outside 1970-2199; say the timestamp unit (s, ms, us, ns)",
    ]


def test_csv_strict_stops_at_the_first_bad_line(tmp_path: Path, db: Database) -> None:
    file = write(tmp_path / "orders.csv", ORDERS)
    with pytest.raises(ImportRowError) as caught:
        run_import(Pipeline(db), read_csv(file, "event=action,user_id=uid,timestamp=ts", strict=True))
    assert caught.value.line == 5
    assert [row[:2] for row in stored(db)] == [("view", "u1"), ("buy", "u1")]


def test_run_import_strict_stops_a_lenient_reader_at_the_same_line(tmp_path: Path, db: Database) -> None:
    file = write(tmp_path / "orders.csv", ORDERS)
    with pytest.raises(ImportRowError, match="line 5: timestamp"):
        run_import(Pipeline(db), read_csv(file, "event=action,user_id=uid,timestamp=ts"), strict=True)
    assert [row[:2] for row in stored(db)] == [("view", "u1"), ("buy", "u1")]


def test_progress_adds_up_to_the_file_size(tmp_path: Path, db: Database) -> None:
    file = write(tmp_path / "orders.csv", ORDERS)
    source = read_csv(file, "event=action,user_id=uid,timestamp=ts")
    steps: list[int] = []
    report = run_import(Pipeline(db), source, progress=steps.append)
    assert sum(steps) == source.size_bytes == file.stat().st_size
    assert report.source == str(file)


def _random_csv(seed: int, rows: int) -> str:
    rng = random.Random(seed)
    pieces = ["plain", "with,comma", 'with "quote"', "two\nlines", "three\r\nline\nbreaks", "", "ünïcödé"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["user", "ts", "note"])
    for row in range(rows):
        writer.writerow([f"u{row % 7}", f"2024-01-01T00:00:{row % 60:02d}Z", rng.choice(pieces)])
        if rng.random() < 0.1:
            out.write("\n")  # a blank line now and then
    return out.getvalue()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_csv_blocks_cut_at_record_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Tiny blocks force many cuts; every record must come back whole, with the
    physical line it starts on (as the csv module counts them)."""
    text = _random_csv(seed, rows=300)
    file = tmp_path / "notes.csv"
    file.write_bytes(text.encode())
    monkeypatch.setattr(tabular, "_FIRST_BLOCK_BYTES", 97)
    monkeypatch.setattr(tabular, "_MIN_BLOCK_BYTES", 61)

    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    expected = []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        if record:
            expected.append((start, record[0], record[2] or None))

    chunks = list(read_csv(file, "user_id=user,timestamp=ts,properties.note=note", event_name="e", chunk_rows=5))
    assert len(chunks) > 10
    got = [
        (int(line), row["user_id"], json.loads(str(row["properties"])).get("note"))
        for chunk in chunks
        for line, row in zip(chunk.lines, chunk.events.to_pylist(), strict=True)
    ]
    assert got == expected
    assert sum(chunk.bytes_read for chunk in chunks) == file.stat().st_size


def test_csv_other_delimiter_and_encoding(tmp_path: Path) -> None:
    file = tmp_path / "t.tsv"
    file.write_bytes("u;ts;city\nu1;2024-01-01T00:00:00Z;Köln\n".encode("latin-1"))
    rows, rejected = events_of(
        read_csv(file, "user_id=u,timestamp=ts,properties.city=city", event_name="e", delimiter=";", encoding="latin-1")
    )
    assert rejected == []
    assert json.loads(str(rows[0]["properties"])) == {"city": "Köln"}


# -- Parquet -----------------------------------------------------------------------


@pytest.fixture
def parquet_file(tmp_path: Path) -> Path:
    table = pa.table(
        {
            "uid": pa.array([1, 2, 3, 4], pa.int64()),
            "ts": pa.array(
                [datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 11), None, datetime(2024, 1, 1, 12)],
                pa.timestamp("us"),
            ),
            "amount": pa.array([12.5, float("nan"), 1.0, None], pa.float64()),
            "flag": pa.array([True, False, None, True]),
            "tags": pa.array([["a"], [], None, ["b"]], pa.list_(pa.string())),
        }
    )
    path = tmp_path / "orders.parquet"
    pq.write_table(table, path)
    return path


def test_parquet_typed_columns(parquet_file: Path, db: Database) -> None:
    source = read_parquet(
        parquet_file,
        {"user_id": "uid", "timestamp": "ts", "properties.revenue": "amount", "properties.flag": "flag"},
        event_name="purchase",
        chunk_rows=2,
    )
    steps: list[int] = []
    report = run_import(Pipeline(db), source, progress=steps.append)
    assert (report.rows_read, report.imported) == (4, 3)
    assert [str(error) for error in report.rejected] == ["line 3: timestamp: empty"]
    assert sum(steps) == parquet_file.stat().st_size
    rows = stored(db, "event, user_id, timestamp, properties")
    assert [(event, user, when, json.loads(props)) for event, user, when, props in rows] == [
        ("purchase", "1", utc("2024-01-01T10:00:00"), {"revenue": 12.5, "flag": True}),
        ("purchase", "2", utc("2024-01-01T11:00:00"), {"flag": False}),  # NaN is left out
        ("purchase", "4", utc("2024-01-01T12:00:00"), {"flag": True}),
    ]


def test_parquet_mapping_errors(parquet_file: Path) -> None:
    with pytest.raises(MappingError, match="no column 'user'"):
        read_parquet(parquet_file, "user_id=user,timestamp=ts", event_name="e")
    with pytest.raises(MappingError, match="column 'tags' has type list<element: string>"):
        read_parquet(parquet_file, "user_id=uid,timestamp=ts,properties.tags=tags", event_name="e")
    with pytest.raises(MappingError, match="column 'flag' has type bool, which timestamp cannot take"):
        read_parquet(parquet_file, "user_id=uid,timestamp=flag", event_name="e")


def test_parquet_reimport_gives_the_same_event_ids(parquet_file: Path) -> None:
    def ids() -> list[object]:
        rows, _ = events_of(read_parquet(parquet_file, "user_id=uid,timestamp=ts", event_name="e"))
        return [row["event_id"] for row in rows]

    assert ids() == ids()


def test_not_a_parquet_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is not a Parquet file"):
        read_parquet(write(tmp_path / "x.parquet", "nope"), "user_id=u,timestamp=t", event_name="e")


# -- JSON lines ----------------------------------------------------------------------


def message(**fields: object) -> str:
    return msgspec.json.encode(fields).decode()


SEGMENT_EXPORT = "\n".join(
    [
        message(type="track", event="view", anonymousId="a1", messageId="m1",
                timestamp="2024-01-01T10:00:00Z", receivedAt="2024-01-01T10:00:01Z"),  # 1
        "",  # 2: blank
        '{"type": "track", "event": ',  # 3: not JSON
        message(type="track", event="view", messageId="m4", timestamp="2024-01-01T10:01:00Z"),  # 4: nobody
        message(type="identify", anonymousId="a1", userId="u1", messageId="m5",
                traits={"plan": "pro"}, timestamp="2024-01-01T10:02:00Z", receivedAt="2024-01-01T10:02:00Z"),  # 5
        message(type="track", event="buy", userId="u1", messageId="m6", properties={"revenue": 9.5},
                originalTimestamp="2024-01-01T10:03:00Z", sentAt="2024-01-01T10:03:05Z",
                receivedAt="2024-01-01T10:04:05Z"),  # 6: clock 1 minute behind
        message(type="page", anonymousId="a2", messageId="m7", name="Home",
                originalTimestamp="2024-01-01T10:05:00Z", sentAt="2024-01-01T10:05:02Z"),  # 7: no receivedAt
        "",
    ]
)  # fmt: skip


def test_jsonl_imports_good_lines_and_reports_bad_ones(tmp_path: Path, db: Database) -> None:
    file = write(tmp_path / "export.jsonl", SEGMENT_EXPORT)
    report = run_import(Pipeline(db), read_jsonl(file))

    assert (report.rows_read, report.imported, report.rejected_count) == (6, 4, 2)
    assert [error.line for error in report.rejected] == [3, 4]
    assert report.rejected[0].problem.startswith("$: not valid JSON")
    assert report.rejected[1].problem == "$: needs an anonymousId or a userId (or both)"

    rows = stored(db, "event_id, event, type, timestamp, received_at, person_id")
    assert [row[:3] for row in rows] == [
        ("m1", "view", "track"),
        ("m5", "identify", "identify"),
        ("m6", "buy", "track"),
        ("m7", "page_view", "page"),
    ]
    times = {row[0]: (row[3], row[4]) for row in rows}
    # receivedAt is trusted: the buy happened 10:03 on a clock 1 minute slow.
    assert times["m6"] == (utc("2024-01-01T10:04:00"), utc("2024-01-01T10:04:05"))
    # No receivedAt: taken as received when sent, so no skew moves it to today.
    assert times["m7"] == (utc("2024-01-01T10:05:00"), utc("2024-01-01T10:05:02"))
    persons = {row[0]: row[5] for row in rows}
    assert persons["m1"] == persons["m5"] == persons["m6"] != persons["m7"]


def test_jsonl_strict_raises_and_stores_nothing_after_the_bad_line(tmp_path: Path, db: Database) -> None:
    file = write(tmp_path / "export.jsonl", SEGMENT_EXPORT)
    with pytest.raises(ImportRowError) as caught:
        run_import(Pipeline(db), read_jsonl(file, strict=True))
    assert caught.value.line == 3
    assert str(caught.value).startswith("line 3: $: not valid JSON")
    assert db.query("SELECT event_id FROM events").rows == [("m1",)]


def test_jsonl_gzip_and_chunks(tmp_path: Path) -> None:
    import gzip

    file = tmp_path / "export.jsonl.gz"
    with gzip.open(file, "wt", encoding="utf-8") as out:
        for number in range(25):
            out.write(message(type="track", event="e", userId=f"u{number}", timestamp="2024-01-01T00:00:00Z") + "\n")
    source = read_jsonl(file, chunk_rows=10)
    chunks = list(source)
    assert [chunk.events.num_rows for chunk in chunks] == [10, 10, 5]
    assert [int(line) for line in chunks[2].lines] == [21, 22, 23, 24, 25]
    assert sum(chunk.bytes_read for chunk in chunks) == source.size_bytes


def test_report_keeps_examples_but_counts_every_rejection() -> None:
    report = ImportReport(source="x")
    report.add_rejected([ImportRowError(line, "bad") for line in range(MAX_REJECTED_EXAMPLES + 500)])
    report.add_rejected([ImportRowError(1, "bad")])
    assert len(report.rejected) == MAX_REJECTED_EXAMPLES
    assert report.rejected_count == MAX_REJECTED_EXAMPLES + 501


# -- real data sets ------------------------------------------------------------------


def packaged_or_skip(packaged: PackagedFile) -> Path:
    try:
        return packaged.locate()
    except SourceError as exc:
        pytest.skip(str(exc))


def test_missing_dataset_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(SourceError, match=r"pip install --no-deps lifetimes==0\.11\.3"):
        read_cdnow()


def test_movielens_into_duckdb(db: Database) -> None:
    file = packaged_or_skip(MOVIELENS_100K)
    with file.open(newline="") as source:
        ratings = list(csv.DictReader(source, delimiter="\t"))
    users = {row["user_id:token"] for row in ratings}
    items = {row["item_id:token"] for row in ratings}
    assert (len(ratings), len(users), len(items)) == (100_000, 943, 1_682)

    report = run_import(Pipeline(db), read_movielens())
    assert (report.imported, report.rejected_count) == (len(ratings), 0)
    count, persons, distinct_items, rating_sum = db.query(
        "SELECT count(*), count(DISTINCT person_id), count(DISTINCT json_extract_string(properties, '$.item_id')),"
        " sum(CAST(json_extract(properties, '$.rating') AS DOUBLE)) FROM events WHERE event = 'rated'"
    ).rows[0]
    assert (count, persons, distinct_items) == (len(ratings), len(users), len(items))
    assert rating_sum == sum(float(row["rating:float"]) for row in ratings)

    first = ratings[0]  # 196 rated 242 (Kolya) at 881250949
    when, properties = db.query(
        "SELECT timestamp, properties FROM events"
        f" WHERE user_id = 'ml-{first['user_id:token']}' AND json_extract_string(properties, '$.item_id') = '{first['item_id:token']}'"
    ).rows[0]
    assert when == datetime.fromtimestamp(int(first["timestamp:float"]), UTC)
    assert json.loads(properties) == {
        "item_id": "242", "rating": 3.0, "title": "Kolya", "release_year": 1996, "genres": ["Comedy"],
    }  # fmt: skip


def _cdnow_source_totals(file: Path) -> tuple[int, int, Decimal]:
    rows = [line.split() for line in file.read_text().splitlines()[1:] if line.strip()]
    return len(rows), len({int(row[0]) for row in rows}), sum((Decimal(row[3]) for row in rows), Decimal(0))


def _check_cdnow(database: Database, file: Path, revenue_sql: str) -> None:
    rows, customers, revenue = _cdnow_source_totals(file)
    assert (rows, customers) == (69_659, 23_570)
    report = run_import(Pipeline(database), read_cdnow())
    assert (report.rows_read, report.imported, report.rejected_count) == (rows, rows, 0)
    count, persons, stored_revenue, distinct_ids = database.query(
        f"SELECT count(*), count(DISTINCT person_id), sum({revenue_sql}), count(DISTINCT event_id)"
        " FROM events WHERE event = 'purchase'"
    ).rows[0]
    assert (count, persons, distinct_ids) == (rows, customers, rows)
    assert Decimal(str(round(stored_revenue, 2))) == revenue


def test_cdnow_into_duckdb(db: Database) -> None:
    file = packaged_or_skip(CDNOW_MASTER)
    _check_cdnow(db, file, "CAST(json_extract(properties, '$.revenue') AS DOUBLE)")
    first = db.query(
        "SELECT user_id, timestamp, properties FROM events WHERE user_id = 'cdnow-1'"
    ).rows
    assert first == [("cdnow-1", utc("1997-01-01T00:00:00"), '{"revenue":11.77,"quantity":1}')]


@pytest.mark.clickhouse
def test_cdnow_into_clickhouse(chdb_dsn: str) -> None:
    file = packaged_or_skip(CDNOW_MASTER)
    backend = ClickHouseBackend(chdb_dsn, database="importers_test")
    database = Database(backend)
    database.migrate()
    try:
        _check_cdnow(database, file, "JSONExtractFloat(properties, 'revenue')")
    finally:
        backend.execute("DROP DATABASE IF EXISTS importers_test")
        database.close()
