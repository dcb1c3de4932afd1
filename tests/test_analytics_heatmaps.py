"""Heatmaps, three ways: golden timelines with the answer beside them, the
same bodies on DuckDB and ClickHouse, and random event sets (and a simulated
shop) against the pure-Python reference; and the PNG, decoded.

Events are written with the helpers below (``click("ann", "200ms", 500, 40)``)
and go through the pipeline, so identity resolution and sessions run.
"""

from __future__ import annotations

import json
import random
import re
import struct
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footfall.analytics import heatmaps_reference
from footfall.analytics.common import DateRange
from footfall.analytics.conditions import COLUMNS, Filter
from footfall.analytics.errors import SpecError, UnsupportedFeature
from footfall.analytics.heatmaps import (
    HeatmapResult,
    HeatmapSpec,
    PageHeatmap,
    RageHotspot,
    ScrollDepth,
    colour,
    compile,
    format_grid,
    from_json,
    heatmap_png,
    run,
)
from footfall.analytics.paths import CleaningRule
from footfall.analytics.reference import EventRow
from footfall.events import Event
from footfall.events.record import conform
from footfall.pipeline import Pipeline
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database
from footfall.store.duckdb_backend import DuckDBBackend
from footfall.store.schema import PERSONS, derived_tables

from .conftest import make_clickhouse_database
from .timeline import T0, identify, msg, track

# -- fixtures and helpers -------------------------------------------------------

_TABLES = ("events", "persons", "identities", "person_merges")


@pytest.fixture(scope="module", params=["duckdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One store per backend for the module; each test starts from empty tables."""
    if request.param == "duckdb":
        db = Database(DuckDBBackend(tmp_path_factory.mktemp("heatmaps") / "store.duckdb"))
        db.migrate()
    else:
        db = make_clickhouse_database(request.getfixturevalue("chdb_dsn"))
    yield db
    if request.param == "clickhouse":
        db.backend.execute(f"DROP DATABASE IF EXISTS `{db.backend.database}`")  # type: ignore[attr-defined]
    db.close()


def _empty(database: Database) -> None:
    for table in (*_TABLES, *derived_tables(database.backend.dialect)):
        database.backend.execute(f"TRUNCATE TABLE {table}")


@pytest.fixture
def database(store: Database) -> Database:
    _empty(store)
    return store


_ids = iter(range(10**9))


def click(user: str, when: str, x: float | None, y: float | None, *, width: int | None = 1000, path: str = "/",
          event: str = "click", **properties: Any) -> Event:
    """A click as footfall.js sends it: page coordinates and the viewport's width in properties."""
    geometry = {key: value for key, value in (("x", x), ("y", y), ("viewport_width", width)) if value is not None}
    return track(event, when, user=user, properties={"path": path, **geometry, **properties}, messageId=f"m{next(_ids):06d}")


def view(user: str, when: str = "0s", path: str = "/") -> Event:
    return msg("page", at_=when, user=user, properties={"path": path}, messageId=f"m{next(_ids):06d}")


def scroll(user: str, when: str, depth: Any, path: str = "/") -> Event:
    return track("scroll", when, user=user, properties={"path": path, "depth": depth}, messageId=f"m{next(_ids):06d}")


def leave(user: str, when: str, path: str = "/", **properties: Any) -> Event:
    return track("page_leave", when, user=user, properties={"path": path, **properties}, messageId=f"m{next(_ids):06d}")


def checked(database: Database, spec: HeatmapSpec) -> HeatmapResult:
    """Run on the engine and on the reference over the same stored events; they must agree."""
    result = run(database, spec)
    assert result == heatmaps_reference.heatmaps(spec, stored_rows(database), stored_traits(database))
    return result


def stored_rows(database: Database) -> list[EventRow]:
    table = database.query_arrow(f"SELECT person_id, event_id, timestamp, properties, {', '.join(COLUMNS)} FROM events")
    rows = []
    for row in table.to_pylist():
        stamp: datetime = row["timestamp"]
        rows.append(
            EventRow(
                person_id=row["person_id"],
                event_id=row["event_id"],
                event=row["event"],
                timestamp_ms=round(stamp.timestamp() * 1000),
                properties=json.loads(row["properties"]),
                columns={name: row[name] for name in COLUMNS},
            )
        )
    return rows


def stored_traits(database: Database) -> dict[str, dict[str, Any]]:
    return {row["person_id"]: json.loads(row["traits"]) for row in database.persons_arrow().to_pylist()}


def only(result: HeatmapResult) -> PageHeatmap:
    [page] = result.pages
    return page


# -- golden timelines ---------------------------------------------------------------


def test_clicks_on_a_grid_normalised_by_viewport_width(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            view("ann"), view("bob"),
            # on a 1000 px desktop, x 100 and 150 are the second tenth of the width
            click("ann", "1s", 100, 50), click("ann", "5s", 150, 80),
            # so is x 40 on a 400 px phone
            click("bob", "1s", 40, 50, width=400),
            # the right edge, and past it (a page wider than the viewport): the last column
            click("cyd", "1s", 999, 250), click("cyd", "5s", 1200, 299),
            # no viewport width, no coordinates (a click from the keyboard): not placed
            click("dan", "1s", 10, 10, width=None), click("dan", "5s", None, None),
            # 6000 px down: below the 50 rows of 100 px
            click("eve", "1s", 500, 6000),
        ]
    )
    page = only(checked(database, HeatmapSpec(columns=10)))
    assert (page.page, page.page_views, page.clicks, page.placed, page.below, page.unplaced) == ("/", 2, 8, 5, 1, 2)
    # as many rows as the deepest placed click needs
    assert page.grid == (
        (0, 3, 0, 0, 0, 0, 0, 0, 0, 0),
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 2),
    )
    assert page.peak == 3
    assert page.hotspots == ()
    # taller rows, more of the page in the grid
    tall = only(checked(database, HeatmapSpec(columns=10, row_height=200)))
    assert (len(tall.grid), tall.grid[0][1], tall.grid[1][9], tall.below) == (31, 3, 2, 0)
    assert tall.grid[30][5] == 1
    # fewer rows: eve's click and cyd's are now below the grid
    short = only(checked(database, HeatmapSpec(columns=10, rows=2)))
    assert (len(short.grid), short.placed, short.below) == (1, 3, 3)


def test_rows_as_shares_of_the_page_height(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            click("ann", "1s", 10, 0, page_height=1000),
            click("ann", "5s", 10, 499, page_height=1000),
            click("ann", "9s", 10, 1000, page_height=1000),  # the very bottom: the last row
            click("bob", "1s", 10, 2500, page_height=5000),
            click("bob", "5s", 10, 20),  # no page height: not placed
            click("bob", "9s", 10, 20, page_height=True),
        ]
    )
    page = only(checked(database, HeatmapSpec(columns=1, y_scale="page", rows=4)))
    assert page.grid == ((1,), (1,), (1,), (1,))
    assert (page.placed, page.unplaced, page.below) == (4, 2, 0)


def test_pages_are_the_most_clicked_and_cleaning_joins_them(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            view("ann", path="/product/1"), view("bob", path="/product/2"), view("cyd", path="/about"),
            view("dan", path="/about"), view("eve", path="/"),
            click("ann", "1s", 10, 10, path="/product/1"), click("ann", "5s", 10, 10, path="/product/1"),
            click("bob", "1s", 10, 10, path="/product/2"), click("bob", "5s", 10, 10, path="/product/2"),
            click("cyd", "1s", 10, 10, path="/about"),
            click("eve", "1s", 10, 10, path="/"),
        ]
    )
    # two clicks each on the product pages, then /about (more viewed) and /
    pages = checked(database, HeatmapSpec(columns=2)).pages
    assert [(page.page, page.clicks, page.page_views) for page in pages] == [
        ("/product/1", 2, 1), ("/product/2", 2, 1), ("/about", 1, 2), ("/", 1, 1),
    ]
    assert [p.page for p in checked(database, HeatmapSpec(columns=2, page_limit=2)).pages] == ["/product/1", "/product/2"]
    product = CleaningRule(r"^/product/\d+$", "/product/:id")
    joined = checked(database, HeatmapSpec(columns=2, cleaning=(product,), page_limit=1))
    assert [(p.page, p.clicks, p.page_views, p.grid) for p in joined.pages] == [("/product/:id", 4, 2, ((4, 0),))]
    # one page by name, even one without events
    assert only(checked(database, HeatmapSpec(columns=2, page="/about"))).clicks == 1
    nowhere = only(checked(database, HeatmapSpec(columns=3, page="/nowhere")))
    assert (nowhere.clicks, nowhere.grid, nowhere.scroll[0]) == (0, ((0, 0, 0),), ScrollDepth(25, 0, 0.0))


def test_rage_clicks_detected_from_bursts(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            # ann: four clicks 200 ms apart on one spot: the third and fourth are rage clicks
            click("ann", "0s", 500, 500), click("ann", "200ms", 505, 505), click("ann", "400ms", 510, 503),
            click("ann", "600ms", 512, 500),
            # bob: the third click comes 1001 ms after the first: no burst
            click("bob", "0s", 500, 500), click("bob", "500ms", 500, 500), click("bob", "1001ms", 500, 500),
            # cyd: the third exactly 1 s after the first, and exactly 30 px away: a burst
            click("cyd", "0s", 100, 100), click("cyd", "500ms", 110, 100), click("cyd", "1s", 130, 100),
            # dan: three quick clicks 40 px apart: no burst
            click("dan", "0s", 100, 100), click("dan", "100ms", 140, 100), click("dan", "200ms", 180, 100),
            # eve: three clicks in the same millisecond: the last (by event id) is a rage click
            click("eve", "0s", 900, 900), click("eve", "0s", 900, 900), click("eve", "0s", 900, 900),
        ]
    )
    page = only(checked(database, HeatmapSpec(columns=10)))
    assert page.hotspots == (RageHotspot(5, 5, 2, 1), RageHotspot(1, 1, 1, 1), RageHotspot(9, 9, 1, 1))
    assert [h.column for h in checked(database, HeatmapSpec(columns=10, hotspot_limit=1)).pages[0].hotspots] == [5]
    # these bursts are plain clicks, like the simulator's: there is no rage_click event to count
    assert only(checked(database, HeatmapSpec(columns=10, rage_clicks="tracked"))).hotspots == ()


def test_a_long_burst_is_rage_after_its_first_clicks(database: Database) -> None:
    # ann clicks every 10 ms for 2 s, by turns on two spots 40 px apart: a click's near clicks are
    # those on its own spot, up to 50 of them in the second before it; all but each spot's first
    # two are rage clicks (a bot's burst; each second holds 100 clicks of the visit)
    Pipeline(database).ingest_events([click("ann", f"{10 * k}ms", 100 + 40 * (k % 2), 100) for k in range(200)])
    page = only(checked(database, HeatmapSpec(columns=10)))
    assert page.hotspots == (RageHotspot(1, 1, 196, 1),)


def test_rage_clicks_tracked_by_footfall_js(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            click("ann", "0s", 500, 500, event="rage_click", clicks=4),
            click("ann", "1m", 520, 510, event="rage_click", clicks=3),
            click("bob", "0s", 500, 500, event="rage_click", clicks=5),
            click("cyd", "0s", 10, 10, event="rage_click", clicks=3),
            click("cyd", "5s", 10, 10),
        ]
    )
    page = only(checked(database, HeatmapSpec(columns=10, rage_clicks="tracked")))
    assert page.hotspots == (RageHotspot(5, 5, 3, 2), RageHotspot(0, 0, 1, 1))
    # rage_click events are not clicks of the grid; the grid still reaches the hot spot's row
    assert (page.clicks, page.grid[0][0], len(page.grid)) == (1, 1, 6)
    assert only(checked(database, HeatmapSpec(columns=10))).hotspots == ()


def test_scroll_depth_from_scroll_events_and_page_leaves(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            view("ann", path="/article"), view("bob", path="/article"), view("cyd", path="/article"), view("dan", path="/article"),
            *(scroll("ann", f"{depth}s", depth, "/article") for depth in (25, 50, 75, 100)),
            scroll("bob", "1s", 25, "/article"), scroll("bob", "2s", 50, "/article"),
            scroll("cyd", "1s", 25, "/article"),
            scroll("cyd", "2s", "50", "/article"),  # not a number: not counted
            leave("ann", "2m", "/article", max_scroll=100), leave("bob", "2m", "/article", max_scroll=60),
            leave("cyd", "2m", "/article", max_scroll=30), leave("dan", "2m", "/article"),
        ]
    )
    page = only(checked(database, HeatmapSpec(page="/article")))
    assert page.scroll_views == 4
    assert page.scroll == (ScrollDepth(25, 3, 0.75), ScrollDepth(50, 2, 0.5), ScrollDepth(75, 1, 0.25), ScrollDepth(100, 1, 0.25))
    # from page leaves: dan's had no max_scroll, so three page views
    leaves = only(checked(database, HeatmapSpec(page="/article", scroll_source="page_leave")))
    assert leaves.scroll_views == 3
    assert [(depth.depth, depth.reached) for depth in leaves.scroll] == [(25, 3), (50, 2), (75, 1), (100, 1)]
    assert leaves.scroll[1].share == 2 / 3


def test_out_of_order_input_and_merged_persons_change_nothing(database: Database) -> None:
    laptop = [track("click", f"{100 * i}ms", anon="laptop", properties={"path": "/", "x": 500, "y": 500, "viewport_width": 1000})
              for i in range(4)]
    spec = HeatmapSpec(columns=10)
    random.Random(3).shuffle(laptop)
    pipeline = Pipeline(database)
    for event in laptop:
        pipeline.ingest_events([event])
    before = checked(database, spec)
    assert only(before).hotspots == (RageHotspot(5, 5, 2, 1),)
    pipeline.ingest_events([identify("5s", anon="phone", user="u1"), identify("6s", anon="laptop", user="u1")])
    assert checked(database, spec) == before


def test_date_range_and_filters(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            identify("-1m", anon="a-ann", user="ann", traits={"tier": "gold"}),
            view("ann"), view("bob"),
            click("ann", "1s", 10, 10, variant="b"), click("bob", "1s", 990, 10), click("bob", "2h", 990, 10),
        ]
    )
    gold = only(checked(database, HeatmapSpec(columns=2, filters=(Filter("traits.tier", "eq", "gold"),))))
    assert (gold.clicks, gold.page_views, gold.grid) == (1, 1, ((1, 0),))
    variant = only(checked(database, HeatmapSpec(columns=2, filters=(Filter("properties.variant", "is_not_set"),))))
    assert (variant.clicks, variant.page_views, variant.grid) == (2, 2, ((0, 2),))
    hour = only(checked(database, HeatmapSpec(columns=2, date_range=DateRange(T0, T0 + timedelta(hours=1)))))
    assert hour.grid == ((1, 1),)
    # the viewport columns are on clicks only: filtering by them leaves out the page views
    wide = only(checked(database, HeatmapSpec(columns=2, filters=(Filter("viewport_width", "gte", 1000),))))
    assert (wide.clicks, wide.page_views) == (3, 0)
    assert checked(database, HeatmapSpec(date_range=DateRange.parse("2025-01-01", "2025-01-02"))).pages == ()


def test_clickhouse_reads_its_page_events_unless_a_filter_needs_more(database: Database) -> None:
    Pipeline(database).ingest_events([view("ann"), click("ann", "1s", 10, 10), click("bob", "2s", 990, 10, width=None)])
    dialect = database.backend.dialect
    copy = "page_events" if dialect == "clickhouse" else "events"
    for filters, source in [
        ((), copy),
        ((Filter("viewport_width", "gte", 1000), Filter("traits.tier", "is_not_set")), copy),
        ((Filter("user_agent", "is_not_set"),), "events"),  # a column the copy leaves out
    ]:
        spec = HeatmapSpec(columns=2, filters=filters)
        sources = set(re.findall(r"\bFROM (\w+)", compile(spec, dialect))) - {"pages", "persons"}
        assert {name for name in sources if "events" in name} == {source}
        assert only(checked(database, spec)).clicks == (1 if filters and filters[0].field == "viewport_width" else 2)


def test_an_empty_store(database: Database) -> None:
    assert checked(database, HeatmapSpec()).pages == ()


def test_a_simulated_shop_agrees_with_the_reference(database: Database) -> None:
    pipeline = Pipeline(database)
    for table in Simulation(SimulationSpec(users=60, days=7, seed=11)).batches():
        pipeline.ingest(table)
    spec = HeatmapSpec(cleaning=(CleaningRule(r"^/product/\d+$", "/product/:id"),), page_limit=4)
    result = checked(database, spec)
    assert len(result.pages) == 4
    assert sum(page.placed for page in result.pages) > 100
    # the simulator's rage bursts are clicks only, and detection finds them
    assert any(page.hotspots for page in result.pages)
    assert not any(page.hotspots for page in checked(database, HeatmapSpec(rage_clicks="tracked", page_limit=4)).pages)
    for page in result.pages:
        shares = [depth.share for depth in page.scroll]
        assert 1 >= shares[0] >= shares[1] >= shares[2] >= shares[3]
        assert shares[0] > 0
    assert checked(database, HeatmapSpec(scroll_source="page_leave", page_limit=2)).pages[0].scroll_views > 0


# -- the picture ------------------------------------------------------------------------------


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB rows of an 8-bit RGB PNG without filters (as heatmap_png writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, dict[bytes, bytes]()
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        position += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour_type, interlace) == (8, 2, 0)
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = 1 + 3 * width
    assert len(raw) == height * stride
    assert b"IEND" in chunks
    return width, height, [raw[row * stride + 1 : (row + 1) * stride] for row in range(height)]


def pixel(rows: list[bytes], x: int, y: int) -> tuple[int, int, int]:
    return rows[y][3 * x], rows[y][3 * x + 1], rows[y][3 * x + 2]


def brightness(rgb: tuple[int, int, int]) -> float:
    return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]


def test_the_png_shows_hot_cells_brighter() -> None:
    grid = ((9, 0, 1), (0, 4, 0))
    page = PageHeatmap("/", 1, 14, 14, 0, 0, grid, (RageHotspot(2, 0, 3, 1),), 1, ())
    width, height, rows = decode_png(heatmap_png(page, cell_size=10))
    assert (width, height) == (30, 20)
    hot, warm, cold, cool = pixel(rows, 5, 5), pixel(rows, 15, 15), pixel(rows, 15, 5), pixel(rows, 25, 5)
    assert brightness(hot) > brightness(warm) > brightness(cool) > brightness(cold)
    assert hot == colour(1.0)
    assert cold == colour(0.0)
    # the rage hot spot is framed; inside the frame, the cell's own colour
    assert pixel(rows, 20, 0) == pixel(rows, 29, 9) == (0, 230, 255)
    assert pixel(rows, 25, 5) == colour((1 / 9) ** 0.5)
    # a result draws its first page, or the one asked for; one pixel per cell works
    result = HeatmapResult(HeatmapSpec(), (page, PageHeatmap("/b", 0, 0, 0, 0, 0, ((0,),), (), 0, ())))
    assert heatmap_png(result) == heatmap_png(page)
    assert decode_png(heatmap_png(result, page="/b", cell_size=1))[:2] == (1, 1)
    assert decode_png(heatmap_png(page, cell_size=1))[2][0] == bytes((*colour(1.0), *colour(0.0), 0, 230, 255))
    with pytest.raises(SpecError, match="no heatmap of '/c'"):
        heatmap_png(result, page="/c")
    with pytest.raises(SpecError, match="cell_size"):
        heatmap_png(page, cell_size=0)
    assert format_grid(page) == "|@ =|\n| # |"


def test_the_png_of_a_stored_page(database: Database, tmp_path: Any) -> None:
    Pipeline(database).ingest_events([click("ann", f"{i}s", 900, 10) for i in range(0, 20, 2)] + [click("bob", "1s", 10, 150)])
    page = only(run(database, HeatmapSpec(columns=4)))
    width, height, rows = decode_png(heatmap_png(page, cell_size=8))
    assert (width, height) == (32, 16)
    assert brightness(pixel(rows, 28, 4)) > brightness(pixel(rows, 4, 12)) > brightness(pixel(rows, 4, 4))


# -- specs, SQL and errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field", "message"),
    [
        (lambda: HeatmapSpec(page=""), "page", "page path"),
        (lambda: HeatmapSpec(page_limit=0), "page_limit", "from 1 to 100"),
        (lambda: HeatmapSpec(columns=0), "columns", "from 1 to 200"),
        (lambda: HeatmapSpec(columns=2.5), "columns", "whole number"),  # type: ignore[arg-type]
        (lambda: HeatmapSpec(y_scale="viewport"), "y_scale", "'pixels'"),  # type: ignore[arg-type]
        (lambda: HeatmapSpec(row_height=0), "row_height", "from 1"),
        (lambda: HeatmapSpec(rows=1001), "rows", "to 1000"),
        (lambda: HeatmapSpec(rage_clicks="both"), "rage_clicks", "'detected'"),  # type: ignore[arg-type]
        (lambda: HeatmapSpec(hotspot_limit=-1), "hotspot_limit", "from 0"),
        (lambda: HeatmapSpec(scroll_source="max_scroll"), "scroll_source", "'page_leave'"),  # type: ignore[arg-type]
        (lambda: HeatmapSpec(cleaning=(CleaningRule("a", "b"),) * 51), "cleaning", "at most 50"),
        (lambda: HeatmapSpec(time_zone="Mars/Olympus"), "time_zone", "unknown time zone"),
        (lambda: HeatmapSpec(filters=(("x", "gt", 1),)), "filters[0]", "give a Filter"),  # type: ignore[arg-type]
    ],
)
def test_bad_specs_name_the_field(build: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        build()
    assert caught.value.field == field
    assert message in caught.value.problem


def test_compile_needs_no_database_and_is_per_dialect() -> None:
    spec = HeatmapSpec(cleaning=(CleaningRule(r"^/product/\d+$", "/product/:id"),), page="/product/:id")
    duckdb_sql = compile(spec, "duckdb", project_id="shop")
    clickhouse_sql = compile(spec, "clickhouse", project_id="shop")
    assert duckdb_sql == compile(spec, "duckdb", project_id="shop")
    assert duckdb_sql.count(";\n\n") == 1  # tally (pages and cells), rage clicks
    assert "regexp_replace(path" in duckdb_sql
    assert "replaceRegexpAll(path" in clickhouse_sql
    assert "count(DISTINCT (person_id, session_id))" in duckdb_sql
    assert "uniqExact(person_id, session_id)" in clickhouse_sql
    assert "'rage_click'" not in duckdb_sql
    assert "'rage_click'" in compile(HeatmapSpec(rage_clicks="tracked"), "duckdb")
    with pytest.raises(UnsupportedFeature, match="sqlite"):
        compile(spec, "sqlite")


def test_the_clickhouse_queries_read_each_cte_once() -> None:
    # ClickHouse computes a CTE again wherever the query reads it
    specs = (
        HeatmapSpec(),
        HeatmapSpec(page="/", y_scale="page", cleaning=(CleaningRule(r"^/product/\d+$", "/product/:id"),)),
        HeatmapSpec(rage_clicks="tracked", scroll_source="page_leave", filters=(Filter("traits.vip", "eq", True),)),
    )
    for spec in specs:
        for query in compile(spec, "clickhouse").split(";\n\n"):
            names = re.findall(r"^(?:WITH )?(\w+) AS \($", query, flags=re.MULTILINE)
            assert names, query
            for name in names:
                assert len(re.findall(rf"\b(?:FROM|JOIN) {name}\b", query)) == 1, (name, query)


def test_from_json_names_the_json_path() -> None:
    spec = from_json({"page": "/", "y_scale": "page", "rows": 20, "scroll_source": "page_leave", "from": "2026-01-01",
                      "to": "2026-01-02", "filters": [{"field": "device_type", "op": "eq", "value": "desktop"}]})
    assert (spec.page, spec.y_scale, spec.rows, spec.scroll_source) == ("/", "page", 20, "page_leave")
    assert spec.filters == (Filter("device_type", "eq", "desktop"),)
    for document, field in [
        ({"colour": "red"}, "colour"),
        ({"from": 7, "to": "2026-01-01"}, "from"),
        ({"rows": "5"}, "rows"),
        ({"cleaning": [{"pattern": "x*", "alias": "y"}]}, "cleaning[0].pattern"),
        ({"filters": [{"field": "x", "op": "gt", "value": "1"}]}, "filters[0].value"),
        ("page", "$"),
    ]:
        with pytest.raises(SpecError) as caught:
            from_json(document)
        assert caught.value.field == field, document


# -- random event sets: the engine against the reference -----------------------------

KINDS = ("click", "click", "click", "click", "page_view", "scroll", "page_leave", "rage_click")
PAGES = ("/", "/a", "/product/1", "/product/2", None)
XS = (0.0, 10.0, 25.0, 40.0, 300.0, 999.0, 1200.0, -5.0, None)
YS = (0.0, 15.0, 40.0, 99.5, 100.0, 250.0, 5000.0, None)
WIDTHS = (1000, 1000, 400, 0, None)
PROPERTIES: tuple[dict[str, Any], ...] = (
    {}, {"page_height": 800}, {"page_height": 3000.5}, {"page_height": 0}, {"page_height": True}, {"depth": 25},
    {"depth": 50}, {"depth": 100}, {"depth": "75"}, {"max_scroll": 60}, {"max_scroll": 100, "page_height": 800},
    {"plan": "pro"},
)
TRAITS = {"p0": {"vip": True}, "p1": {"vip": False}, "p2": {}}  # p3 has no person row

random_events = st.lists(
    st.tuples(
        st.sampled_from(("p0", "p1", "p2", "p3")),
        st.sampled_from(("s0", "s1")),
        st.sampled_from(KINDS),
        st.sampled_from(PAGES),
        st.integers(0, 30),  # in steps of 150 ms
        st.sampled_from(XS),
        st.sampled_from(YS),
        st.sampled_from(WIDTHS),
        st.sampled_from(PROPERTIES),
    ),
    max_size=45,
)


@st.composite
def heatmap_specs(draw: st.DrawFn) -> HeatmapSpec:
    date_range = draw(st.sampled_from((None, (0, 2000), (1000, 3000))))
    return HeatmapSpec(
        page=draw(st.sampled_from((None, None, "/", "/product/:id", "/nowhere"))),
        page_limit=draw(st.integers(1, 3)),
        cleaning=draw(st.sampled_from(((), (CleaningRule(r"^/product/\d+$", "/product/:id"),), (CleaningRule("a", "b"),)))),
        columns=draw(st.integers(1, 5)),
        y_scale=draw(st.sampled_from(("pixels", "page"))),
        row_height=draw(st.sampled_from((50, 100))),
        rows=draw(st.sampled_from((1, 2, 3, 50))),
        rage_clicks=draw(st.sampled_from(("detected", "tracked"))),
        hotspot_limit=draw(st.integers(0, 3)),
        scroll_source=draw(st.sampled_from(("scroll", "page_leave"))),
        date_range=None if date_range is None else DateRange(T0 + timedelta(milliseconds=date_range[0]), T0 + timedelta(milliseconds=date_range[1])),
        filters=draw(st.sampled_from(((), (Filter("properties.plan", "is_not_set"),), (Filter("traits.vip", "eq", True),)))),
    )


def load_random(database: Database, rows: list[tuple[Any, ...]], ids: list[int]) -> None:
    """Events straight into the store (person and session ids as given), and the persons' traits."""
    _empty(database)
    if rows:
        times = [T0 + timedelta(milliseconds=150 * row[4]) for row in rows]
        table = pa.table(
            {
                "event_id": [f"id{i:03d}" for i in ids],
                "project_id": [database.project_id] * len(rows),
                "type": ["page" if row[2] == "page_view" else "track" for row in rows],
                "event": [row[2] for row in rows],
                "person_id": [row[0] for row in rows],
                "session_id": [row[1] for row in rows],
                "timestamp": pa.array(times, pa.timestamp("ms", tz="UTC")),
                "received_at": pa.array(times, pa.timestamp("ms", tz="UTC")),
                "properties": [json.dumps(row[8]) for row in rows],
                "path": [row[3] for row in rows],
                "x": pa.array([row[5] for row in rows], pa.float64()),
                "y": pa.array([row[6] for row in rows], pa.float64()),
                "viewport_width": pa.array([row[7] for row in rows], pa.int32()),
            }
        )
        database.insert("events", conform(table))
    moment = pa.array([T0] * len(TRAITS), PERSONS.schema.field("first_seen").type)
    database.upsert(
        "persons",
        pa.table(
            {
                "project_id": [database.project_id] * len(TRAITS),
                "person_id": list(TRAITS),
                "user_id": [None] * len(TRAITS),
                "traits": [json.dumps(traits) for traits in TRAITS.values()],
                "first_seen": moment,
                "last_seen": moment,
                "last_session_id": ["s0"] * len(TRAITS),
                "last_session_start": moment,
                "updated_at": moment,
            },
            schema=PERSONS.schema,
        ),
    )


def _check_against_reference(database: Database, data: st.DataObject) -> None:
    rows = data.draw(random_events, label="events")
    ids = data.draw(st.permutations(range(len(rows))), label="event id order")
    spec = data.draw(heatmap_specs(), label="spec")
    load_random(database, rows, ids)
    assert run(database, spec) == heatmaps_reference.heatmaps(spec, stored_rows(database), TRAITS)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_heatmaps_agree_with_the_reference(database: Database, data: st.DataObject) -> None:
    _check_against_reference(database, data)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_many_random_heatmaps_agree_with_the_reference(database: Database, data: st.DataObject) -> None:
    _check_against_reference(database, data)
