"""The segment condition language: parsing, round trips, and errors that name
the part at fault; the SQL each dialect gets for a few conditions."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from footfall.analytics.errors import UnsupportedFeature
from footfall.segments import (
    Comparison,
    ConditionError,
    EventSequence,
    Performed,
    SegmentDefinition,
    SegmentSet,
    members_sql,
    parse_condition,
    parse_definition,
    parse_definitions,
    parse_text,
    ready_made,
)
from footfall.segments.templates import TEMPLATES

NOW = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)


def test_a_condition_reads_as_its_json() -> None:
    condition = parse_condition(
        {
            "sequence": {
                "steps": [
                    {"event": "view_product", "where": [{"field": "properties.product_id", "op": "eq", "value": "A"}]},
                    {"event": "add_to_cart", "within": "1h"},
                ],
                "then_not": {"event": "checkout_started", "within": "24h"},
                "in_last": "7d",
            }
        }
    )
    assert isinstance(condition, EventSequence)
    assert condition.steps[1].within == timedelta(hours=1)
    assert condition.then_not is not None
    assert condition.then_not.within == timedelta(days=1)
    assert parse_condition(condition.to_json()) == condition
    assert condition.to_json()["sequence"]["in_last"] == "7d"


def test_conditions_built_in_python_equal_parsed_ones() -> None:
    built = Performed("view_product", count=Comparison.of(gte=3), in_last=timedelta(days=7))
    assert built == parse_condition({"performed": {"event": "view_product", "count": {"gte": 3}, "in_last": "7d"}})
    assert Performed("view_product", count={"gte": 3}, in_last="7d") == built  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("document", "path", "problem"),
    [
        ({"performd": {"event": "x"}}, "$.performd", "unknown condition 'performd'"),
        ({"performed": {"event": "x", "count": {"gtee": 3}}}, "$.performed.count.gtee", "unknown comparison 'gtee'"),
        ({"performed": {"event": "x", "cout": 3}}, "$.performed.cout", "unknown key 'cout'; expected event, where, count, in_last"),
        ({"performed": {"count": {"gte": 1}}}, "$.performed.event", "'event' is required"),
        ({"performed": {"event": 3}}, "$.performed.event", "give an event name"),
        ({"performed": {"event": "x", "in_last": "a week"}}, "$.performed.in_last", "bad duration 'a week'"),
        ({"performed": {"event": "x", "in_last": "90m"}}, "$.performed.in_last", "windows count whole hours"),
        ({"performed": {"event": "x", "in_last": "-1d"}}, "$.performed.in_last", "bad duration"),
        ({"performed": {"event": "x", "in_last": "500d"}}, "$.performed.in_last", "up to 400 days"),
        ({"performed": {"event": "x", "in_last": 7}}, "$.performed.in_last", "give a duration"),
        ({"performed": {"event": "x", "count": {"gte": 2.5}}}, "$.performed.count.gte", "whole numbers"),
        ({"performed": {"event": "x", "count": {"gte": "3"}}}, "$.performed.count.gte", "finite number"),
        ({"performed": {"event": "x", "count": 3}}, "$.performed.count", "give comparisons as an object"),
        (
            {"performed": {"event": "x", "where": [{"field": "properties.a", "op": "like", "value": "b"}]}},
            "$.performed.where[0].op",
            "unknown operator 'like'",
        ),
        (
            {"performed": {"event": "x", "where": [{"field": "properties.a", "op": "in", "value": "b"}]}},
            "$.performed.where[0].value",
            "non-empty list",
        ),
        (
            {"performed": {"event": "x", "where": [{"field": "traits.plan", "op": "eq", "value": "pro"}]}},
            "$.performed.where[0].field",
            "is a person trait",
        ),
        ({"performed": {"event": "x", "where": {"field": "country"}}}, "$.performed.where", "give a list of filters"),
        ({"performed": {"event": "segment_entered"}}, "$.performed.event", "in_segment"),
        ({"last_seen": {"more_than": "30d", "within": "7d"}}, "$.last_seen", "exactly one of more_than or within"),
        ({"last_seen": "30d"}, "$.last_seen", "give an object"),
        ({"sessions": {"in_last": "7d"}}, "$.sessions.count", "'count' is required"),
        ({"sequence": {"steps": []}}, "$.sequence.steps", "1 to 10 steps"),
        ({"sequence": {"steps": [{"event": "a", "within": "1h"}]}}, "$.sequence.steps[0].within", "first step"),
        (
            {"sequence": {"steps": [{"event": "a"}, {"event": "b", "within": "soon"}]}},
            "$.sequence.steps[1].within",
            "bad duration 'soon'",
        ),
        ({"sequence": {"steps": [{"event": "a"}], "then_not": {"event": "b"}}}, "$.sequence.then_not.within", "required"),
        ({"trait": {"field": "properties.plan", "op": "eq", "value": "pro"}}, "$.trait.field", "is not a trait"),
        ({"trait": {"field": "traits.name", "op": "regex", "value": "(?<=a)b"}}, "$.trait.value", "RE2"),
        ({"trait": {"field": "traits.age", "op": "gt", "value": True}}, "$.trait.value", "gt takes a number or string"),
        ({"score": {"name": "engagement", "value": {"gte": "high"}}}, "$.score.value.gte", "finite number"),
        ({"score": {"name": "", "value": {"gte": 1}}}, "$.score.name", "score name"),
        ({"in_segment": "Big Spenders"}, "$.in_segment", "segment ids"),
        ({"and": []}, "$.and", "non-empty list"),
        ({"or": [{"last_seen": {"within": "1d"}}, {"nope": {}}]}, "$.or[1].nope", "unknown condition 'nope'"),
        ({"not": {"and": [{"last_seen": {"within": "1h30m"}}]}}, "$.not.and[0].last_seen.within", "whole hours"),
        ({"last_seen": {"within": "7d"}, "extra": 1}, "$", "one key"),
        ("active", "$", "one key"),
    ],
)
def test_invalid_conditions_name_the_part_at_fault(document: object, path: str, problem: str) -> None:
    with pytest.raises(ConditionError) as raised:
        parse_condition(document)
    assert raised.value.field == path
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f"{path}: ")
    assert raised.value.code == "bad_segment"


def test_definitions_name_the_segment_at_fault() -> None:
    with pytest.raises(ConditionError, match=r"^\$\[1\]\.condition\.last_seen\.within: windows count whole hours"):
        parse_definitions([
            {"id": "a", "condition": {"last_seen": {"within": "1d"}}},
            {"id": "b", "condition": {"last_seen": {"within": "1.5h"}}},
        ])
    with pytest.raises(ConditionError, match=r"^\$\.id: segment ids"):
        parse_definition({"id": "", "condition": {"last_seen": {"within": "1d"}}})
    with pytest.raises(ConditionError, match=r"^\$\.colour: unknown key"):
        parse_definition({"id": "a", "colour": "red", "condition": {"last_seen": {"within": "1d"}}})


def _definition(segment: str, condition: dict[str, object]) -> SegmentDefinition:
    return parse_definition({"id": segment, "condition": condition})


def test_cycles_between_segments_are_errors_naming_the_cycle() -> None:
    definitions = [
        _definition("a", {"and": [{"last_seen": {"within": "1d"}}, {"in_segment": "b"}]}),
        _definition("b", {"not": {"in_segment": "c"}}),
        _definition("c", {"or": [{"in_segment": "a"}, {"first_seen": {"within": "1d"}}]}),
    ]
    with pytest.raises(ConditionError) as raised:
        SegmentSet(definitions)
    assert raised.value.field == "$[0].condition.and[1].in_segment"
    assert raised.value.problem == "segments refer to each other in a cycle: a -> b -> c -> a"
    with pytest.raises(ConditionError, match=r"^\$\[0\]\.condition\.in_segment: segments refer to each other in a cycle: a -> a"):
        SegmentSet([_definition("a", {"in_segment": "a"})])


def test_a_segment_set_orders_segments_after_those_they_read() -> None:
    segments = SegmentSet([
        _definition("both", {"and": [{"in_segment": "recent"}, {"in_segment": "buyers"}]}),
        _definition("recent", {"last_seen": {"within": "7d"}}),
        _definition("buyers", {"performed": {"event": "purchase"}}),
    ])
    assert segments.order == ("recent", "buyers", "both")
    with pytest.raises(ConditionError, match=r"^\$\[0\]\.condition\.in_segment: unknown segment 'missing' \(defined: a\)"):
        SegmentSet([_definition("a", {"in_segment": "missing"})])
    with pytest.raises(ConditionError, match=r"^\$\[1\]\.id: segment 'a' is defined twice"):
        SegmentSet([_definition("a", {"last_seen": {"within": "1d"}})] * 2)


def test_definition_files_are_json_or_yaml() -> None:
    text = '{"id": "recent", "name": "Recent", "condition": {"last_seen": {"within": "7d"}}}'
    assert parse_definition(parse_text(text)).name == "Recent"
    with pytest.raises(ConditionError, match=r"^\$: not valid JSON: .* line 1 column 2"):
        parse_text("{id: 1}")
    yaml_text = "id: recent\ncondition:\n  last_seen:\n    within: 7d\n"
    if importlib.util.find_spec("yaml") is None:
        with pytest.raises(ConditionError, match="YAML needs PyYAML"):
            parse_text(yaml_text, "yaml")
    else:
        assert parse_definition(parse_text(yaml_text, "yaml")) == parse_definition(parse_text(text)).__class__(
            "recent", parse_condition({"last_seen": {"within": "7d"}})
        )


def test_templates_are_valid_definitions_with_parameters() -> None:
    segments = SegmentSet(ready_made())
    assert list(segments.order) == list(TEMPLATES)
    lapsed = TEMPLATES["lapsed"](inactive_for="30d", segment_id="lapsed_30d")
    assert lapsed.condition.to_json() == {"last_seen": {"more_than": "30d"}}
    with pytest.raises(ConditionError, match="whole hours"):
        TEMPLATES["active_recent"](within="30m")


# -- SQL: readable, per dialect ----------------------------------------------------------


def test_the_sql_of_a_sequence_with_absence_uses_asof_joins_per_dialect() -> None:
    condition = ready_made()[3].condition
    duckdb = members_sql(condition, "duckdb", NOW, "shop")
    clickhouse = members_sql(condition, "clickhouse", NOW, "shop")
    assert "ASOF LEFT JOIN" in duckdb
    assert "LEFT ASOF JOIN" in clickhouse
    assert "FROM persons\n" in duckdb
    assert "FROM persons FINAL\n" in clickhouse
    # The window starts on the hour: 12:30 less 7 days starts at 12:00.
    assert "TIMESTAMPTZ '2024-02-23 12:00:00.000+00'" in duckdb
    assert "toDateTime64('2024-02-23 12:00:00.000', 3, 'UTC')" in clickhouse
    assert clickhouse.endswith("SETTINGS join_use_nulls = 1, enable_materialized_cte = 1")


def test_model_scores_in_sql_need_a_scores_table() -> None:
    condition = parse_condition({"score": {"name": "churn_risk", "value": {"gte": 0.7}}})
    with pytest.raises(UnsupportedFeature, match="model score 'churn_risk' in SQL"):
        members_sql(condition, "duckdb", NOW)
    assert "FROM model_scores WHERE" in members_sql(condition, "duckdb", NOW, scores_table="model_scores")


# -- round trips over generated conditions --------------------------------------------------

_windows = st.sampled_from(["1h", "6h", "1d", "7d", "30d"])
_events = st.sampled_from(["view_product", "add_to_cart", "purchase"])
_filters = st.lists(
    st.sampled_from([
        {"field": "properties.category", "op": "eq", "value": "shoes"},
        {"field": "properties.price", "op": "gte", "value": 20},
        {"field": "country", "op": "in", "value": ["DE", "FR"]},
        {"field": "properties.on_sale", "op": "is_set"},
    ]),
    max_size=2,
)
_leaves = st.one_of(
    st.builds(lambda e, w, n, t: {"performed": {"event": e, "where": w, "count": {"gte": n}, "in_last": t}}, _events, _filters, st.integers(0, 4), _windows),
    st.builds(lambda t, k: {"last_seen": {k: t}}, _windows, st.sampled_from(["within", "more_than"])),
    st.builds(lambda n: {"sessions": {"count": {"lte": n, "gte": 1}}}, st.integers(1, 5)),
    st.builds(
        lambda a, b, w: {"sequence": {"steps": [{"event": a}, {"event": b, "within": w}], "then_not": {"event": "purchase", "within": "2h"}}},
        _events, _events, st.sampled_from(["30m", "1h", "2d"]),
    ),
    st.just({"trait": {"field": "traits.plan", "op": "in", "value": ["pro", "team"]}}),
    st.builds(lambda x: {"score": {"name": "engagement", "value": {"gt": x}}}, st.floats(0, 50, allow_nan=False)),
)
_conditions = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.builds(lambda items: {"and": items}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda items: {"or": items}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda item: {"not": item}, inner),
    ),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(document=_conditions)
def test_a_parsed_condition_survives_its_json_and_compiles_for_both_dialects(document: dict[str, object]) -> None:
    condition = parse_condition(document)
    assert parse_condition(condition.to_json()) == condition
    for dialect in ("duckdb", "clickhouse"):
        assert members_sql(condition, dialect, NOW).startswith("SELECT person_id FROM persons")
