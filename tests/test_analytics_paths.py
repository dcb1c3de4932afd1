"""Paths, three ways: golden timelines with the answer beside them, the same
bodies on DuckDB and ClickHouse, and random event sets against the pure-Python
reference.

Timelines read ``ann: /@0s, /product/1@1m, purchase@3m{"revenue": 5}``: one
person per line (the name is their user id); a step that starts with ``/`` is a
page view of that path, any other is a tracked event; offsets from T0;
properties in braces. Events go through the pipeline, so identity resolution
and sessions (a new one after 30 minutes without events) run.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footfall.analytics import paths_reference
from footfall.analytics.common import DateRange
from footfall.analytics.conditions import COLUMNS, Filter
from footfall.analytics.errors import SpecError, UnsupportedFeature
from footfall.analytics.paths import (
    CleaningRule,
    ComparedStep,
    NodeType,
    PathResult,
    PathSpec,
    compile,
    compile_comparison,
    from_json,
    run,
)
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
        db = Database(DuckDBBackend(tmp_path_factory.mktemp("paths") / "store.duckdb"))
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


_STEP = re.compile(r"([^\s,@]+)@([\d.a-z]+)(\{[^}]*\})?")


def journeys(text: str) -> list[Event]:
    events = []
    for line in text.strip().splitlines():
        user, _, timeline = line.partition(":")
        user = user.strip()
        for position, (name, when, raw) in enumerate(_STEP.findall(timeline)):
            properties = json.loads(raw) if raw else {}
            message_id = f"{user}-{position:02d}"
            if name.startswith("/"):
                events.append(msg("page", at_=when, user=user, properties={"path": name, **properties}, messageId=message_id))
            else:
                events.append(track(name, when, user=user, properties=properties, messageId=message_id))
    return events


def ingest(database: Database, text: str) -> None:
    Pipeline(database).ingest_events(journeys(text))


PRODUCT = CleaningRule(r"^/product/\d+$", "/product/:id")


def checked(database: Database, spec: PathSpec) -> PathResult:
    """Run on the engine and on the reference over the same stored events; they must agree."""
    result = run(database, spec, known_events_only=False)
    assert result == paths_reference.paths(spec, stored_rows(database), stored_traits(database))
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


def edges(result: PathResult) -> list[tuple[int, str, str, int]]:
    return [(edge.step, edge.source, edge.target, edge.sessions) for edge in result.edges]


def nodes(result: PathResult) -> list[tuple[int, str, int, int]]:
    return [(node.step, node.node, node.sessions, node.dropped) for node in result.nodes]


def compared(entries: tuple[ComparedStep, ...]) -> list[tuple[str, int, int, float, float | None]]:
    return [(entry.node, entry.converted, entry.dropped, entry.difference, entry.lift) for entry in entries]


P = "/product/:id"

# -- golden timelines ---------------------------------------------------------------

SHOP = """
ann: /@0s, /product/1@1m, /product/2@2m, /cart@3m
bob: /@0s, /product/3@1m
cyd: /@0s, /about@1m, /@2m, /product/4@3m
dan: /product/5@0s, /cart@1m
"""


def test_top_transitions_with_cleaning_and_merged_repeats(database: Database) -> None:
    ingest(database, SHOP)
    # ann: / -> P (her two products are one step) -> /cart; bob: / -> P;
    # cyd: / -> /about -> / -> P; dan: P -> /cart
    result = checked(database, PathSpec(cleaning=(PRODUCT,)))
    assert (result.sessions, result.persons) == (4, 4)
    assert edges(result) == [
        (0, "/", P, 2),
        (0, "/", "/about", 1),
        (0, P, "/cart", 1),
        (1, "/about", "/", 1),
        (1, P, "/cart", 1),
        (2, "/", P, 1),
    ]
    assert nodes(result) == [
        (0, "/", 3, 0),
        (0, P, 1, 0),
        (1, P, 2, 1),  # bob's session ended there
        (1, "/about", 1, 0),
        (1, "/cart", 1, 1),
        (2, "/", 1, 0),
        (2, "/cart", 1, 1),
        (3, P, 1, 1),
    ]
    assert result.comparison is None
    # the busiest edge alone, and only its nodes (with their totals over all paths)
    top = checked(database, PathSpec(cleaning=(PRODUCT,), edge_limit=1))
    assert (edges(top), nodes(top)) == ([(0, "/", P, 2)], [(0, "/", 3, 0), (1, P, 2, 1)])
    # uncleaned, every product is a page of its own
    raw = checked(database, PathSpec())
    assert (0, "/", "/product/1", 1) in edges(raw)
    assert (1, "/product/1", "/product/2", 1) in edges(raw)


def test_the_step_limit_cuts_paths(database: Database) -> None:
    ingest(database, SHOP)
    result = checked(database, PathSpec(cleaning=(PRODUCT,), max_steps=2))
    assert edges(result) == [(0, "/", P, 2), (0, "/", "/about", 1), (0, P, "/cart", 1)]
    # ann goes on past the limit: only bob and dan dropped at step 1
    assert nodes(result) == [(0, "/", 3, 0), (0, P, 1, 0), (1, P, 2, 1), (1, "/about", 1, 0), (1, "/cart", 1, 1)]


def test_from_a_start_point(database: Database) -> None:
    ingest(database, SHOP)
    # from each session's first product page; cyd reaches one only at the end
    result = checked(database, PathSpec(cleaning=(PRODUCT,), start=P))
    assert (result.sessions, edges(result)) == (4, [(0, P, "/cart", 2)])
    assert nodes(result) == [(0, P, 4, 2), (1, "/cart", 2, 2)]  # bob and cyd ended at the product
    # a start nobody reached
    assert checked(database, PathSpec(start="/nowhere")).sessions == 0


def test_to_an_end_point_steps_count_back(database: Database) -> None:
    ingest(database, SHOP)
    # the paths of the sessions that reached the cart, the cart at step 0
    result = checked(database, PathSpec(cleaning=(PRODUCT,), end="/cart"))
    assert result.sessions == 2
    assert edges(result) == [(-1, P, "/cart", 2), (-2, "/", P, 1)]
    assert nodes(result) == [(-2, "/", 1, 0), (-1, P, 2, 0), (0, "/cart", 2, 2)]
    # at most max_steps steps before (and with) the end
    short = checked(database, PathSpec(cleaning=(PRODUCT,), end="/cart", max_steps=2))
    assert edges(short) == [(-1, P, "/cart", 2)]


def test_from_a_start_to_an_end(database: Database) -> None:
    ingest(database, SHOP)
    # from the first home page to the first product page after it; dan never saw the home page
    result = checked(database, PathSpec(cleaning=(PRODUCT,), start="/", end=P))
    assert result.sessions == 3
    assert edges(result) == [(0, "/", P, 2), (0, "/", "/about", 1), (1, "/about", "/", 1), (2, "/", P, 1)]
    # the end is the first occurrence after the start, not the start itself
    home_again = checked(database, PathSpec(start="/", end="/"))
    assert (home_again.sessions, edges(home_again)) == (1, [(0, "/", "/about", 1), (1, "/about", "/", 1)])


def test_cleaning_rules_apply_in_order_to_every_match(database: Database) -> None:
    ingest(
        database,
        """
        ann: /shop/12/item/7@0s, /shop/3/item/9@1m, /shop/3@2m
        """,
    )
    ids = CleaningRule(r"\d+", ":n")
    items = CleaningRule("/shop/:n/item/:n", "/item")  # sees the first rule's output
    result = checked(database, PathSpec(cleaning=(ids, items)))
    # the two item pages become one step
    assert edges(result) == [(0, "/item", "/shop/:n", 1)]
    reversed_order = checked(database, PathSpec(cleaning=(items, ids)))
    assert edges(reversed_order) == [(0, "/shop/:n/item/:n", "/shop/:n", 1)]


def test_exclusions_drop_steps_before_repeats_merge(database: Database) -> None:
    ingest(
        database,
        """
        ann: /@0s, /health@1m, /@2m, /b@3m
        bob: /product/1@0s, /product/2@1m, /b@2m
        """,
    )
    assert edges(checked(database, PathSpec())) == [
        (0, "/", "/health", 1),
        (0, "/product/1", "/product/2", 1),
        (1, "/health", "/", 1),
        (1, "/product/2", "/b", 1),
        (2, "/", "/b", 1),
    ]
    # without /health, ann's two home pages are one step
    assert edges(checked(database, PathSpec(exclusions=("/health",)))) == [
        (0, "/", "/b", 1),
        (0, "/product/1", "/product/2", 1),
        (1, "/product/2", "/b", 1),
    ]
    # an exclusion may name the cleaned step
    result = checked(database, PathSpec(exclusions=(P,), cleaning=(PRODUCT,)))
    assert edges(result) == [(0, "/", "/health", 1), (1, "/health", "/", 1), (2, "/", "/b", 1)]
    assert nodes(result)[-1] == (3, "/b", 1, 1)
    # bob's only step left is /b: a path of one step, no edge
    assert result.sessions == 2


def test_events_as_steps(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, click@1s, view@2s, cart@3s, buy@4s
        bob: view@0s, /home@1s, buy@2s
        """,
    )
    every = checked(database, PathSpec(node_type="events"))
    # bob's page view is the event page_view
    assert edges(every) == [
        (0, "view", "click", 1),
        (0, "view", "page_view", 1),
        (1, "click", "view", 1),
        (1, "page_view", "buy", 1),
        (2, "view", "cart", 1),
        (3, "cart", "buy", 1),
    ]
    # only some events: the clicks go, and ann's two views merge
    listed = checked(database, PathSpec(node_type="events", events=("view", "cart", "buy")))
    assert edges(listed) == [(0, "view", "buy", 1), (0, "view", "cart", 1), (1, "cart", "buy", 1)]
    # cleaning works on event names too
    shop = CleaningRule("^(view|cart)$", "shop")
    assert edges(checked(database, PathSpec(node_type="events", events=("view", "cart", "buy"), cleaning=(shop,)))) == [
        (0, "shop", "buy", 2)
    ]


def test_sessions_are_separate_paths(database: Database) -> None:
    ingest(
        database,
        """
        ann: /@0s, /a@10m, /b@50m, /c@55m
        bob: /@0s, /a@29m, /b@58m
        """,
    )
    # ann was away 40 minutes: two sessions; bob never 30 minutes: one
    result = checked(database, PathSpec())
    assert (result.sessions, result.persons) == (3, 2)
    assert edges(result) == [(0, "/", "/a", 2), (0, "/b", "/c", 1), (1, "/a", "/b", 1)]
    assert [(n.step, n.node, n.sessions, n.persons) for n in result.nodes][:2] == [(0, "/", 2, 2), (0, "/b", 1, 1)]


def test_same_timestamp_events_go_by_event_id_and_input_order_does_not_matter(database: Database) -> None:
    def page(path: str, message_id: str, when: str = "0s") -> Event:
        return msg("page", at_=when, user="ann", properties={"path": path}, messageId=message_id)

    # /b's id sorts first: at the same millisecond, it comes first
    Pipeline(database).ingest_events([page("/a", "id-2"), page("/b", "id-1"), page("/c", "id-3", "1m")])
    assert edges(checked(database, PathSpec())) == [(0, "/b", "/a", 1), (1, "/a", "/c", 1)]

    _empty(database)
    events = journeys(SHOP)
    random.Random(5).shuffle(events)
    pipeline = Pipeline(database)
    for start in range(0, len(events), 4):
        pipeline.ingest_events(events[start : start + 4])
    assert edges(checked(database, PathSpec(cleaning=(PRODUCT,))))[0] == (0, "/", P, 2)


def test_persons_merged_by_identify_count_once(database: Database) -> None:
    pipeline = Pipeline(database)
    laptop = [msg("page", at_=when, anon="laptop", properties={"path": path}) for path, when in (("/", "0s"), ("/a", "1m"))]
    pipeline.ingest_events(laptop)
    phone = [msg("page", at_=when, user="u1", properties={"path": path}) for path, when in (("/", "2h"), ("/b", "2h1m"))]
    pipeline.ingest_events([identify("2h", anon="phone", user="u1"), *phone])
    before = checked(database, PathSpec())
    assert (before.sessions, before.persons) == (2, 2)
    assert pipeline.ingest_events([identify("3h", anon="laptop", user="u1")]).merges == 1
    after = checked(database, PathSpec())
    # the same two sessions, now one person's
    assert (after.sessions, after.persons) == (2, 1)
    assert [(n.node, n.sessions, n.persons) for n in after.nodes if n.step == 0] == [("/", 2, 1)]


def test_date_range_filters_and_person_traits(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            identify("-1m", anon="a-ann", user="ann", traits={"tier": "gold"}),
            *journeys(
                """
                ann: /@0s, /a@1m{"test": true}, /b@2m
                bob: /@0s, /b@1m, /c@1h
                """
            ),
        ]
    )
    # bob was away an hour before /c: a session of one step, without edges
    everything = checked(database, PathSpec())
    assert (everything.sessions, edges(everything)) == (3, [(0, "/", "/a", 1), (0, "/", "/b", 1), (1, "/a", "/b", 1)])
    no_tests = checked(database, PathSpec(filters=(Filter("properties.test", "is_not_set"),)))
    assert edges(no_tests) == [(0, "/", "/b", 2)]
    gold = checked(database, PathSpec(filters=(Filter("traits.tier", "eq", "gold"),)))
    assert edges(gold) == [(0, "/", "/a", 1), (1, "/a", "/b", 1)]
    # from T0 + 1m (inclusive) to T0 + 1h (exclusive)
    window = DateRange(T0 + timedelta(minutes=1), T0 + timedelta(hours=1))
    ranged = checked(database, PathSpec(date_range=window))
    assert (ranged.sessions, edges(ranged)) == (2, [(0, "/a", "/b", 1)])
    # 1 March is over at 10:00 UTC on Kiritimati (UTC+14), before anything happened
    day = DateRange.parse("2024-03-01", "2024-03-02")
    assert checked(database, PathSpec(date_range=day)).sessions == 3
    assert checked(database, PathSpec(date_range=day, time_zone="Pacific/Kiritimati")).sessions == 0


def test_clickhouse_reads_its_page_events_for_page_paths_unless_a_filter_needs_more(database: Database) -> None:
    ingest(database, "ann: /@0s, signup@30s, /a@1m, /b@2m\nbob: /@0s, /b@1m")
    dialect = database.backend.dialect
    copy = "page_events" if dialect == "clickhouse" else "events"
    for spec, source, found in [
        (PathSpec(), copy, [(0, "/", "/a", 1), (0, "/", "/b", 1), (1, "/a", "/b", 1)]),
        (PathSpec(filters=(Filter("path", "neq", "/a"), Filter("traits.tier", "is_not_set"))), copy, [(0, "/", "/b", 2)]),
        # a column the copy leaves out
        (PathSpec(filters=(Filter("user_agent", "is_not_set"),)), "events", [(0, "/", "/a", 1), (0, "/", "/b", 1), (1, "/a", "/b", 1)]),
        # events as steps are not all page events
        (PathSpec(node_type="events", events=("page_view", "signup")), "events", [(0, "page_view", "signup", 1), (1, "signup", "page_view", 1)]),
    ]:
        sources = set(re.findall(r"\bFROM (\w+)", compile(spec, dialect))) - {"persons"}
        assert {name for name in sources if "events" in name} == {source}
        assert edges(checked(database, spec)) == found


def test_a_simulated_shop_agrees_with_the_reference(database: Database) -> None:
    pipeline = Pipeline(database)
    for table in Simulation(SimulationSpec(users=60, days=7, seed=11)).batches():
        pipeline.ingest(table)
    result = checked(database, PathSpec(cleaning=(PRODUCT,), conversion_event="purchase", edge_limit=10))
    assert result.sessions > 50
    assert len(result.edges) == 10
    comparison = result.comparison
    assert comparison is not None
    assert comparison.converted > 0
    # whoever bought went through the cart first
    cart = next(step for step in comparison.steps if step.node == "/cart")
    assert cart.converted_share == 1.0
    assert cart.lift is not None
    assert cart.lift > 1
    to_checkout = checked(database, PathSpec(cleaning=(PRODUCT,), end="/checkout", max_steps=3))
    assert {node.node for node in to_checkout.nodes if node.step == 0} == {"/checkout"}


def test_empty_store(database: Database) -> None:
    result = checked(database, PathSpec(conversion_event="purchase"))
    assert (result.sessions, result.persons, result.edges, result.nodes) == (0, 0, (), ())
    assert result.comparison is not None
    assert (result.comparison.converted, result.comparison.dropped, result.comparison.steps) == (0, 0, ())


# -- converted vs dropped ---------------------------------------------------------------

CHECKOUTS = """
ann: /@0s, /sale@1m, /cart@2m, purchase@3m, /thanks@4m
bob: /@0s, /cart@1m, purchase@2m
cyd: /@0s, /blog@1m, /cart@2m
dan: /@0s, /blog@1m
"""


def test_converted_and_dropped_paths_compared(database: Database) -> None:
    ingest(database, CHECKOUTS)
    result = checked(database, PathSpec(conversion_event="purchase"))
    comparison = result.comparison
    assert comparison is not None
    assert (comparison.conversion_event, comparison.converted, comparison.dropped) == ("purchase", 2, 2)
    # /thanks came after ann's purchase: it is not on the path that led there
    assert compared(comparison.steps) == [
        ("/cart", 2, 1, 0.5, 2.0),
        ("/sale", 1, 0, 0.5, None),
        ("/", 2, 2, 0.0, 1.0),
        ("/blog", 0, 2, -1.0, 0.0),
    ]
    cart = comparison.steps[0]
    assert (cart.source, cart.target, cart.converted_share, cart.dropped_share) == ("/cart", None, 1.0, 0.5)
    assert compared(comparison.transitions) == [
        ("/ -> /cart", 1, 0, 0.5, None),
        ("/ -> /sale", 1, 0, 0.5, None),
        ("/sale -> /cart", 1, 0, 0.5, None),
        ("/blog -> /cart", 0, 1, -0.5, 0.0),
        ("/ -> /blog", 0, 2, -1.0, 0.0),
    ]
    assert (comparison.transitions[0].source, comparison.transitions[0].target) == ("/", "/cart")
    # the paths themselves are unchanged by the comparison
    assert edges(result) == edges(checked(database, PathSpec()))
    # limited like the edges
    assert len(checked(database, PathSpec(conversion_event="purchase", edge_limit=2)).comparison.steps) == 2  # type: ignore[union-attr]


def test_comparison_from_a_start_point(database: Database) -> None:
    ingest(
        database,
        CHECKOUTS
        + """
        eve: purchase@0s, /@1m, /cart@2m
        """,
    )
    # from the cart: ann and bob bought after it, cyd did not; dan never got
    # there; eve bought before her cart, which does not count
    comparison = checked(database, PathSpec(conversion_event="purchase", start="/cart")).comparison
    assert comparison is not None
    assert (comparison.converted, comparison.dropped) == (2, 2)
    assert compared(comparison.steps) == [("/cart", 2, 2, 0.0, 1.0)]
    assert comparison.transitions == ()
    # over whole sessions, eve converted with nothing before it
    whole = checked(database, PathSpec(conversion_event="purchase")).comparison
    assert whole is not None
    assert (whole.converted, whole.dropped) == (3, 2)


def test_comparison_of_event_paths(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, search@1s, cart@2s, buy@3s, view@4s
        bob: view@0s, cart@1s
        """,
    )
    comparison = checked(database, PathSpec(node_type="events", conversion_event="buy")).comparison
    assert comparison is not None
    assert compared(comparison.steps)[0] == ("search", 1, 0, 1.0, None)
    # the conversion event itself is where the path stops, not a step of it
    assert "buy" not in [entry.node for entry in comparison.steps]


# -- specs, SQL and errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field", "message"),
    [
        (lambda: PathSpec(node_type="screens"), "node_type", "'pages'"),  # type: ignore[arg-type]
        (lambda: PathSpec(max_steps=1), "max_steps", "from 2 to 20"),
        (lambda: PathSpec(max_steps=21), "max_steps", "from 2 to 20"),
        (lambda: PathSpec(max_steps=True), "max_steps", "whole number"),
        (lambda: PathSpec(edge_limit=0), "edge_limit", "from 1 to 1000"),
        (lambda: PathSpec(start=""), "start", "the step paths begin at"),
        (lambda: PathSpec(end=7), "end", "the step paths stop at"),  # type: ignore[arg-type]
        (lambda: PathSpec(events=("view",)), "events", "node_type 'events'"),
        (lambda: PathSpec(node_type="events", events=("view", "")), "events[1]", "non-empty"),
        (lambda: PathSpec(exclusions="/health"), "exclusions", "list of str"),  # type: ignore[arg-type]
        (lambda: PathSpec(cleaning=(("a", "b"),)), "cleaning[0]", "CleaningRule"),  # type: ignore[arg-type]
        (lambda: PathSpec(cleaning=(PRODUCT,) * 51), "cleaning", "at most 50"),
        (lambda: CleaningRule("(", "x"), "CleaningRule.pattern", "bad regular expression"),
        (lambda: CleaningRule("(?=a)b", "x"), "CleaningRule.pattern", "RE2"),
        (lambda: CleaningRule("x*", "y"), "CleaningRule.pattern", "empty text"),
        (lambda: CleaningRule(r"\b", "y"), "CleaningRule.pattern", "empty text"),
        (lambda: CleaningRule("", "y"), "CleaningRule.pattern", "regular expression"),
        (lambda: CleaningRule(r"/(\d+)", r"/\1"), "CleaningRule.alias", "backslash"),
        (lambda: CleaningRule("a", None), "CleaningRule.alias", "text that replaces"),  # type: ignore[arg-type]
        (lambda: PathSpec(conversion_event="buy", end="/cart"), "conversion_event", "end point"),
        (lambda: PathSpec(conversion_event=""), "conversion_event", "counts as converting"),
        (lambda: PathSpec(time_zone="Mars/Olympus"), "time_zone", "unknown time zone"),
        (lambda: PathSpec(filters=(("path", "eq", "/"),)), "filters[0]", "give a Filter"),  # type: ignore[arg-type]
        (lambda: compile_comparison(PathSpec(), "duckdb"), "conversion_event", "name the conversion event"),
    ],
)
def test_bad_specs_name_the_field(build: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        build()
    assert caught.value.field == field
    assert message in caught.value.problem


def test_unknown_events_are_refused_with_a_suggestion(database: Database) -> None:
    ingest(database, CHECKOUTS)
    with pytest.raises(SpecError) as caught:
        run(database, PathSpec(conversion_event="purchse"))
    assert caught.value.field == "conversion_event"
    assert "did you mean 'purchase'?" in caught.value.problem
    with pytest.raises(SpecError, match=r"events\[1\]"):
        run(database, PathSpec(node_type="events", events=("purchase", "paid")))


def test_compile_needs_no_database_and_is_per_dialect() -> None:
    spec = PathSpec(cleaning=(PRODUCT,), start="/", conversion_event="purchase", exclusions=("/health",))
    duckdb_sql = compile(spec, "duckdb", project_id="shop")
    clickhouse_sql = compile(spec, "clickhouse", project_id="shop")
    assert duckdb_sql == compile(spec, "duckdb", project_id="shop")  # deterministic
    assert "regexp_replace(path, '^/product/\\d+$', '/product/:id', 'g')" in duckdb_sql
    assert "replaceRegexpAll(path, '^/product/\\\\d+$', '/product/:id')" in clickhouse_sql
    assert duckdb_sql.count(";\n\n") == 1  # the paths, then the comparison
    assert "project_id = 'shop'" in clickhouse_sql
    with pytest.raises(UnsupportedFeature, match="sqlite"):
        compile(spec, "sqlite")


def test_from_json_names_the_json_path() -> None:
    spec = from_json({"node_type": "events", "events": ["view", "buy"], "end": "buy", "max_steps": 3,
                      "filters": [{"field": "country", "op": "eq", "value": "NZ"}], "time_zone": "Europe/Berlin"})
    assert (spec.node_type, spec.events, spec.end, spec.max_steps, spec.time_zone) == (
        "events", ("view", "buy"), "buy", 3, "Europe/Berlin")
    assert spec.filters == (Filter("country", "eq", "NZ"),)
    for document, field in [
        ({"colour": "red"}, "colour"),
        ({"from": 7, "to": "2026-02-01"}, "from"),
        ({"from": "2026-01-01"}, "to"),
        ({"max_steps": "5"}, "max_steps"),
        ({"cleaning": [{"pattern": "a"}]}, "cleaning[0].alias"),
        ({"cleaning": [{"pattern": "a", "alias": "b", "flags": "i"}]}, "cleaning[0].flags"),
        ({"cleaning": {"pattern": "a"}}, "cleaning"),
        ({"exclusions": "/health"}, "exclusions"),
        ({"filters": [{"field": "properties.x", "op": "like"}]}, "filters[0].op"),
        ([], "$"),
    ]:
        with pytest.raises(SpecError) as caught:
            from_json(document)
        assert caught.value.field == field, document


# -- random event sets: the engine against the reference -----------------------------

PAGES = ("/", "/a", "/b", "/product/1", "/product/22", "/health", None)
EVENTS = ("page_view", "page_view", "page_view", "view", "cart", "buy")
PROPERTIES: tuple[dict[str, Any], ...] = ({}, {"plan": "pro"}, {"plan": "free"}, {"n": 1})
RULES = (
    (),
    (PRODUCT,),
    (CleaningRule(r"\d+", "N"),),
    (CleaningRule("^/(a|b)$", "/ab"), CleaningRule("view|cart", "shop")),
    (CleaningRule("/product/", "/"), CleaningRule(r"^/\d+$", "/a")),
)
GLOBAL_FILTERS = ((), (Filter("properties.plan", "neq", "free"),), (Filter("traits.vip", "eq", True),))
TRAITS = {"p0": {"vip": True}, "p1": {"vip": False}, "p2": {}}  # p3 has no person row
NODES = ("/", "/a", "/b", P, "/ab", "/health", "view", "cart", "buy", "shop", "page_view", "/N", "/product/N")

random_events = st.lists(
    st.tuples(
        st.sampled_from(("p0", "p1", "p2", "p3")),
        st.sampled_from(("s0", "s1")),
        st.sampled_from(EVENTS),
        st.sampled_from(PAGES),
        st.integers(0, 20),
        st.sampled_from(PROPERTIES),
    ),
    max_size=45,
)


@st.composite
def path_specs(draw: st.DrawFn) -> PathSpec:
    node_type: NodeType = draw(st.sampled_from(("pages", "events")))
    end = draw(st.sampled_from((None, None, *NODES)))
    conversion = None if end is not None else draw(st.sampled_from((None, "buy", "cart")))
    date_range = draw(st.sampled_from((None, (2, 15), (0, 1))))
    return PathSpec(
        node_type=node_type,
        start=draw(st.sampled_from((None, None, *NODES))),
        end=end,
        max_steps=draw(st.integers(2, 4)),
        edge_limit=draw(st.integers(1, 8)),
        events=draw(st.sampled_from(((), ("view", "cart"), ("page_view", "buy")))) if node_type == "events" else (),
        exclusions=draw(st.sampled_from(((), ("/health",), ("/a", "cart"), (P,)))),
        cleaning=draw(st.sampled_from(RULES)),
        conversion_event=conversion,
        date_range=None if date_range is None else DateRange(T0 + timedelta(seconds=date_range[0]), T0 + timedelta(seconds=date_range[1])),
        filters=draw(st.sampled_from(GLOBAL_FILTERS)),
    )


def load_random(database: Database, rows: list[tuple[str, str, str, str | None, int, dict[str, Any]]], ids: list[int]) -> None:
    """Events straight into the store (person and session ids as given), and the persons' traits."""
    _empty(database)
    if rows:
        times = [T0 + timedelta(seconds=tick) for *_, tick, _ in rows]
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
                "properties": [json.dumps(row[5]) for row in rows],
                "path": [row[3] for row in rows],
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
    spec = data.draw(path_specs(), label="spec")
    load_random(database, rows, ids)
    assert run(database, spec, known_events_only=False) == paths_reference.paths(spec, stored_rows(database), TRAITS)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_paths_agree_with_the_reference(database: Database, data: st.DataObject) -> None:
    _check_against_reference(database, data)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_many_random_paths_agree_with_the_reference(database: Database, data: st.DataObject) -> None:
    _check_against_reference(database, data)
