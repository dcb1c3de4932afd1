"""Shared analysis options: filters (SQL on both engines vs the Python predicate),
date ranges and time zones, spec errors."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footfall.analytics.common import DateRange, check_breakdown, check_names, events_where
from footfall.analytics.conditions import MISSING, OPERATORS, Filter, lookup
from footfall.analytics.dialects import dialect_named
from footfall.analytics.errors import SpecError, UnsupportedFeature
from footfall.events import events_to_table
from footfall.pipeline import Pipeline
from footfall.store.database import Database

from .timeline import T0, identify, track

# Stored property values of every kind a filter meets.
DOCUMENTS: list[dict[str, Any]] = [
    {},
    {"v": None},
    {"v": "pro"},
    {"v": "Pro"},
    {"v": "pro plan"},
    {"v": ""},
    {"v": "10"},
    {"v": "9"},
    {"v": 10},
    {"v": 9.5},
    {"v": -3},
    {"v": 0},
    {"v": 18446744073709551615},
    {"v": True},
    {"v": False},
    {"v": [1, 2]},
    {"v": {"w": "deep"}},
    {"v": "ümlaut ✓"},
    {"v": "it's \"quoted\" \\ back"},
    {"v": "a7"},
]

FILTERS = [
    Filter("properties.v", "eq", "pro"),
    Filter("properties.v", "eq", 10),
    Filter("properties.v", "eq", 10.0),
    Filter("properties.v", "eq", True),
    Filter("properties.v", "eq", False),
    Filter("properties.v", "neq", "pro"),
    Filter("properties.v", "neq", 10),
    Filter("properties.v", "neq", False),
    Filter("properties.v", "in", ("pro", "Pro", "x")),
    Filter("properties.v", "in", (9.5, 0)),
    Filter("properties.v", "not_in", ("pro",)),
    Filter("properties.v", "not_in", (10, -3)),
    Filter("properties.v", "gt", 9),
    Filter("properties.v", "gte", 9.5),
    Filter("properties.v", "lt", 0),
    Filter("properties.v", "lte", 0),
    Filter("properties.v", "gt", "9"),  # strings compare as strings: "a7" > "9"
    Filter("properties.v", "lt", "Q"),
    Filter("properties.v", "contains", "ro"),
    Filter("properties.v", "contains", ""),
    Filter("properties.v", "contains", "\"quoted\" \\"),
    Filter("properties.v", "regex", r"^[a-z]\d$"),
    Filter("properties.v", "regex", "plan|Pro"),
    Filter("properties.v", "is_set"),
    Filter("properties.v", "is_not_set"),
    Filter("properties.v.w", "eq", "deep"),
    Filter("properties.v.w", "is_set"),
    Filter("properties.v", "gt", 1e19),
]


def load_documents(database: Database, documents: list[dict[str, Any]]) -> None:
    events = []
    for position, document in enumerate(documents):
        event = track("probe", f"{position}s", user="u", properties=document)
        event.event_id, event.person_id, event.session_id = f"e{position:03d}", "p", "s"
        events.append(event)
    database.insert("events", events_to_table(events))


def sql_matches(database: Database, condition: Filter) -> set[str]:
    where = events_where(dialect_named(database.backend.dialect), database.project_id, filters=[condition])
    return {str(row[0]) for row in database.query(f"SELECT event_id FROM events WHERE {where}").rows}


def python_matches(documents: list[dict[str, Any]], condition: Filter) -> set[str]:
    return {f"e{position:03d}" for position, document in enumerate(documents) if condition.matches(document, {}, {})}


def test_every_operator_agrees_with_its_python_predicate(database: Database) -> None:
    load_documents(database, DOCUMENTS)
    assert {condition.op for condition in FILTERS} == set(OPERATORS)
    for condition in FILTERS:
        assert sql_matches(database, condition) == python_matches(DOCUMENTS, condition), condition


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        # number filters compare numerically and only with numbers
        (Filter("properties.v", "gt", 9), [10, 9.5, 18446744073709551615]),
        (Filter("properties.v", "eq", 10), [10]),
        # string filters only with strings
        (Filter("properties.v", "eq", "10"), ["10"]),
        (Filter("properties.v", "gt", "9"), ["pro", "Pro", "pro plan", "ümlaut ✓", "it's \"quoted\" \\ back", "a7"]),
        # neq is the negation of eq: missing and other kinds match
        (Filter("properties.v", "neq", "pro"), [m for m in (d.get("v", MISSING) for d in DOCUMENTS) if m != "pro"]),
        (Filter("properties.v", "is_not_set"), [MISSING, None]),
        (Filter("properties.v", "contains", "ro"), ["pro", "Pro", "pro plan"]),
    ],
)
def test_typed_comparisons(database: Database, condition: Filter, expected: list[Any]) -> None:
    load_documents(database, DOCUMENTS)
    found = sorted(sql_matches(database, condition))
    assert [DOCUMENTS[int(event_id[1:])].get("v", MISSING) for event_id in found] == expected


def test_column_filters_compare_columns(database: Database) -> None:
    events = []
    for position, (path, x) in enumerate([("/a", 10.0), ("/b", None), (None, 3.0)]):
        properties: dict[str, Any] = {"x": x, "y": 1} if x is not None else {}
        if path:
            properties["path"] = path
        event = track("click", f"{position}s", user="u", properties=properties)
        event.event_id, event.person_id, event.session_id = f"e{position:03d}", "p", "s"
        events.append(event)
    database.insert("events", events_to_table(events))
    assert sql_matches(database, Filter("path", "eq", "/a")) == {"e000"}
    assert sql_matches(database, Filter("path", "neq", "/a")) == {"e001", "e002"}
    assert sql_matches(database, Filter("path", "is_not_set")) == {"e002"}
    assert sql_matches(database, Filter("x", "gt", 5)) == {"e000"}
    assert sql_matches(database, Filter("x", "lte", 5)) == {"e002"}


def test_person_filters_read_current_traits(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            identify("0s", anon="a1", user="ann", traits={"plan": "pro", "seats": 12}),
            track("view", "1s", user="ann"),
            identify("0s", anon="b1", user="bob", traits={"plan": "free"}),
            track("view", "1s", user="bob"),
            track("view", "1s", anon="c1"),  # never identified: no traits
            identify("1m", anon="b1", user="bob", traits={"plan": "pro"}),  # upgraded later
        ]
    )

    def users(*conditions: Filter) -> set[str | None]:
        where = events_where(dialect_named(database.backend.dialect), database.project_id, filters=list(conditions))
        rows = database.query(f"SELECT DISTINCT user_id, anonymous_id FROM events WHERE event = 'view' AND {where}").rows
        return {row[0] or row[1] for row in rows}

    assert users(Filter("traits.plan", "eq", "pro")) == {"ann", "bob"}
    assert users(Filter("traits.seats", "gte", 10)) == {"ann"}
    assert users(Filter("traits.plan", "eq", "pro"), Filter("traits.seats", "is_not_set")) == {"bob"}
    assert users(Filter("traits.plan", "is_not_set")) == {"c1"}


@pytest.mark.parametrize(
    ("build", "field", "message"),
    [
        (lambda: Filter("properties.v", "equals", 1), "Filter.op", "unknown operator 'equals'"),
        (lambda: Filter("properties.v", "gt", True), "Filter.value", "gt takes a number or string value"),
        (lambda: Filter("properties.v", "contains", 3), "Filter.value", "contains takes a string value"),
        (lambda: Filter("properties.v", "in", ()), "Filter.value", "non-empty list"),
        (lambda: Filter("properties.v", "in", ("a", 1)), "Filter.value", "not a mix"),
        (lambda: Filter("properties.v", "is_set", "x"), "Filter.value", "is_set takes no value"),
        (lambda: Filter("properties.v", "eq", float("nan")), "Filter.value", "finite"),
        (lambda: Filter("properties.v", "regex", "a("), "Filter.value", "bad regular expression"),
        (lambda: Filter("properties.v", "regex", "(?=a)b"), "Filter.value", "RE2"),
        (lambda: Filter("properties.v", "regex", r"(a)\1"), "Filter.value", "RE2"),
        (lambda: Filter("properties.", "eq", 1), "Filter.field", "bad key ''"),
        (lambda: Filter('properties.a"b', "eq", 1), "Filter.field", "bad key"),
        (lambda: Filter("propertys.v", "eq", 1), "Filter.field", "unknown field 'propertys.v'"),
        (lambda: Filter("person_id", "eq", "p"), "Filter.field", "unknown field"),
        (lambda: Filter("x", "eq", "left"), "Filter.value", "column 'x' holds numbers"),
        (lambda: Filter("country", "gt", 3), "Filter.value", "column 'country' holds strings"),
        (lambda: DateRange.parse("2024-03-01", "2024-3-2"), "DateRange.end", "bad date"),
        (lambda: DateRange(date(2024, 3, 2), date(2024, 3, 2)), "DateRange.end", "the range is empty"),
        (lambda: DateRange("2024-03-01", date(2024, 3, 2)), "DateRange.start", "give a date or datetime"),  # type: ignore[arg-type]
        (lambda: check_breakdown("traits.plan"), "breakdown", "person traits"),
        (lambda: check_breakdown("viewport_width"), "breakdown", "holds numbers"),
    ],
)
def test_bad_options_name_the_field(build: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        build()
    assert caught.value.field == field
    assert message in str(caught.value)
    assert caught.value.code == "bad_spec"


def test_lists_become_tuples_so_filters_stay_hashable() -> None:
    condition = Filter("properties.v", "in", ["a", "b"])  # type: ignore[arg-type]
    assert condition.value == ("a", "b")
    assert hash(condition) == hash(Filter("properties.v", "in", ("a", "b")))


def test_unknown_dialect_is_a_typed_error() -> None:
    with pytest.raises(UnsupportedFeature, match="postgres"):
        dialect_named("postgres")


# -- date ranges and time zones -------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "zone", "expected"),
    [
        ("2024-03-02", "2024-03-03", "UTC", ("2024-03-02T00:00+00:00", "2024-03-03T00:00+00:00")),
        ("2024-03-02", "2024-03-03", "Europe/Berlin", ("2024-03-01T23:00+00:00", "2024-03-02T23:00+00:00")),
        # New York springs forward on 2024-03-10: that day is 23 hours long
        ("2024-03-10", "2024-03-11", "America/New_York", ("2024-03-10T05:00+00:00", "2024-03-11T04:00+00:00")),
        # naive datetimes are read in the zone; aware ones are instants
        ("2024-03-02T08:30", "2024-03-02T09:00", "Asia/Kolkata", ("2024-03-02T03:00+00:00", "2024-03-02T03:30+00:00")),
        ("2024-03-02T08:30+00:00", "2024-03-02T09:00Z", "Asia/Kolkata", ("2024-03-02T08:30+00:00", "2024-03-02T09:00+00:00")),
    ],
)
def test_date_ranges_resolve_in_the_time_zone(start: str, end: str, zone: str, expected: tuple[str, str]) -> None:
    resolved = DateRange.parse(start, end).resolve(zone)
    assert resolved == tuple(datetime.fromisoformat(text) for text in expected)


def test_local_dates_follow_the_time_zone_in_both_engines(database: Database) -> None:
    dialect = dialect_named(database.backend.dialect)
    moment = dialect.timestamp(datetime(2024, 3, 1, 23, 30, tzinfo=UTC))
    for zone, expected in [("UTC", date(2024, 3, 1)), ("Europe/Berlin", date(2024, 3, 2)), ("America/Los_Angeles", date(2024, 3, 1))]:
        sql = dialect.render("local_date", x=moment, zone=dialect.quote(zone))
        assert database.query(f"SELECT {sql}").rows[0][0] == expected


# -- property tests: random documents and filters, SQL vs Python -------------------

scalars = st.one_of(
    st.sampled_from(["a", "b", "ab", "B", "", "10", "2"]),
    st.integers(-3, 12),
    st.sampled_from([0.5, 2.5, -1.25]),
    st.booleans(),
    st.none(),
)
documents = st.lists(
    st.dictionaries(st.sampled_from(["k", "m"]), st.one_of(scalars, st.dictionaries(st.just("k"), scalars, max_size=1)), max_size=2),
    min_size=1,
    max_size=12,
)
filter_values: dict[str, Any] = {
    "eq": st.one_of(st.sampled_from(["a", "10", ""]), st.integers(-3, 12), st.booleans()),
    "neq": st.one_of(st.sampled_from(["a", "b"]), st.integers(0, 3), st.booleans()),
    "in": st.one_of(st.lists(st.sampled_from(["a", "B", "2"]), min_size=1, max_size=3), st.lists(st.sampled_from([0.5, 2, 10]), min_size=1, max_size=3)),
    "not_in": st.lists(st.sampled_from(["a", "ab"]), min_size=1, max_size=2),
    "gt": st.one_of(st.integers(-2, 11), st.sampled_from(["a", "1"])),
    "gte": st.sampled_from([0, 0.5, 2.5, "ab"]),
    "lt": st.one_of(st.integers(-2, 11), st.sampled_from(["a", "B"])),
    "lte": st.sampled_from([-1.25, 0, "b"]),
    "contains": st.sampled_from(["a", "b", "", "0"]),
    "regex": st.sampled_from(["^a", "b$", "[0-9]+", "A|b", r"\d"]),
    "is_set": st.none(),
    "is_not_set": st.none(),
}
filters = st.sampled_from(sorted(OPERATORS)).flatmap(
    lambda op: st.builds(Filter, st.sampled_from(["properties.k", "properties.m", "properties.k.k"]), st.just(op), filter_values[op])
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=documents, conditions=st.lists(filters, min_size=1, max_size=4))
def test_random_filters_agree_with_python(database: Database, documents: list[dict[str, Any]], conditions: list[Filter]) -> None:
    database.backend.execute("TRUNCATE TABLE events")
    load_documents(database, documents)
    for condition in conditions:
        assert sql_matches(database, condition) == python_matches(documents, condition), (condition, documents)


def test_lookup_walks_nested_objects() -> None:
    document = json.loads('{"a": {"b": 1, "n": null}, "s": "x"}')
    assert lookup(document, ("a", "b")) == 1
    assert lookup(document, ("a", "n")) is MISSING
    assert lookup(document, ("s", "b")) is MISSING
    assert lookup(document, ("zz",)) is MISSING


def test_scan_bounds_are_inclusive_timestamps() -> None:
    where = events_where(dialect_named("clickhouse"), "shop's", since=T0, until=T0 + timedelta(hours=1))
    assert "project_id = 'shop\\'s'" in where
    assert "timestamp >= toDateTime64('2024-03-01 12:00:00.000', 3, 'UTC')" in where
    assert "timestamp <= toDateTime64('2024-03-01 13:00:00.000', 3, 'UTC')" in where


def test_names_are_looked_up_only_when_a_spec_names_something(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    load_documents(database, [{"plan": "pro"}])
    asked: list[str] = []
    query = database.query
    monkeypatch.setattr(database, "query", lambda sql: asked.append(sql) or query(sql))
    # nothing named (an is_not_set filter and a column filter name nothing to look up): no query
    check_names(database, filters=[("filters", Filter("properties.x", "is_not_set")), ("filters", Filter("path", "eq", "/"))])
    assert asked == []
    check_names(database, events=[("event", "probe")], filters=[("filters", Filter("properties.plan", "eq", "pro"))])
    assert len(asked) == 2  # the event names, then the property
    with pytest.raises(SpecError, match=r"'properties\.plna'") as caught:
        check_names(database, filters=[("filters", Filter("properties.plna", "eq", "pro"))])
    assert caught.value.field == "filters.field"
    with pytest.raises(SpecError, match="did you mean 'probe'"):
        check_names(database, events=[("steps[0]", "prbe")])
