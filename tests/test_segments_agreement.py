"""Agreement: a simulated month of shop traffic replayed through the pipeline
in batches; at the end (and later, as time alone moves memberships) the
incremental engine's members equal the SQL compiler's, for every template
and for random conditions (hypothesis), on DuckDB and ClickHouse. A fresh
engine loaded from the store (SQL) agrees too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footfall.pipeline import Pipeline
from footfall.segments import (
    MembershipChange,
    SegmentDefinition,
    SegmentEngine,
    SegmentSet,
    parse_definition,
    ready_made,
    run_members,
)
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database
from footfall.store.duckdb_backend import DuckDBBackend

from .conftest import make_clickhouse_database

Batch = tuple[pa.Table, list[tuple[str, str]], pa.Table]


@dataclass
class Traffic:
    """A store holding the simulated month, and the batches the pipeline stored."""

    database: Database
    batches: list[Batch] = field(default_factory=list)

    # The pipeline's profiles hook: it hands over each stored batch.
    def load(self) -> Traffic:
        return self

    def record(self, events: pa.Table, persons: pa.Table, merges: Sequence[tuple[str, str]]) -> None:
        self.batches.append((events, list(merges), persons))

    @property
    def end(self) -> datetime:
        return max(max(events["timestamp"].to_pylist()) for events, _, _ in self.batches)

    def replay(self, engine: SegmentEngine) -> list[MembershipChange]:
        """Each batch at the time of its latest event (the clock never goes back)."""
        changes: list[MembershipChange] = []
        clock = None
        for events, merges, persons in self.batches:
            latest = max(events["timestamp"].to_pylist())
            clock = latest if clock is None else max(clock, latest)
            changes += engine.on_batch(events, merges, persons, now=clock)
        return changes


@pytest.fixture(scope="module", params=["duckdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def traffic(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    if request.param == "duckdb":
        database = Database(DuckDBBackend(tmp_path_factory.mktemp("segments") / "store.duckdb"))
        database.migrate()
    else:
        database = make_clickhouse_database(request.getfixturevalue("chdb_dsn"))
    traffic = Traffic(database)
    pipeline = Pipeline(database, profiles=traffic)  # type: ignore[arg-type]
    for table in Simulation(SimulationSpec(users=300, days=30, seed=11)).batches(max_rows=2000):
        pipeline.ingest(table)
    yield traffic
    if request.param == "clickhouse":
        database.backend.execute(f"DROP DATABASE IF EXISTS `{database.backend.database}`")  # type: ignore[attr-defined]
    database.close()


def segment(segment_id: str, condition: dict[str, Any]) -> SegmentDefinition:
    return parse_definition({"id": segment_id, "condition": condition})


EXTRAS = [
    segment("onboarded", {"sequence": {"steps": [{"event": "sign_up"}, {"event": "view_product", "within": "48h"}]}}),
    segment(
        "cart_then_checkout_no_buy",
        {
            "sequence": {
                "steps": [
                    {"event": "view_product", "where": [{"field": "properties.on_sale", "op": "eq", "value": True}]},
                    {"event": "add_to_cart", "within": "2h"},
                    {"event": "checkout_started", "within": "1d"},
                ],
                "then_not": {"event": "purchase", "within": "1h"},
                "in_last": "14d",
            }
        },
    ),
    segment("engaged", {"score": {"name": "engagement", "value": {"gte": 15}}}),
    segment("premium_active", {"and": [
        {"in_segment": "active_recent"},
        {"trait": {"field": "traits.plan", "op": "eq", "value": "premium"}},
    ]}),
    segment("quiet_browsers", {"and": [
        {"in_segment": "high_intent_browsers"},
        {"not": {"in_segment": "engaged_high_frequency"}},
        {"performed": {"event": "search", "count": {"lte": 1}, "in_last": "3d"}},
    ]}),
    segment("lapsed_buyers", {"last_performed": {"event": "purchase", "more_than": "3d"}}),
    segment("new_users", {"first_seen": {"within": "2d"}}),
]


def _agree(traffic: Traffic, engine: SegmentEngine, segments: SegmentSet, at: datetime) -> dict[str, int]:
    engine.advance(at)
    sizes = {}
    for definition in segments:
        batch = set(run_members(traffic.database, definition.condition, at, segments=segments))
        assert engine.members(definition.id) == batch, f"{definition.id} at {at}"
        sizes[definition.id] = len(batch)
    return sizes


def test_templates_agree_with_sql_at_the_end_and_as_time_passes(traffic: Traffic) -> None:
    segments = SegmentSet([*ready_made(), *EXTRAS])
    engine = SegmentEngine(segments, engagement=traffic.database.config.engagement)
    changes = traffic.replay(engine)
    end = traffic.end
    seen: dict[str, int] = {}
    for later in (timedelta(0), timedelta(days=2, hours=3, minutes=17), timedelta(days=9)):
        engine_changes = engine.advance(end + later)
        changes += engine_changes
        for segment_id, size in _agree(traffic, engine, segments, end + later).items():
            seen[segment_id] = max(seen.get(segment_id, 0), size)
    assert all(seen.values()), f"every segment has members at some point: {seen}"
    # The changes tell the whole story: replaying them gives the memberships.
    folded: dict[str, set[str]] = {segment_id: set() for segment_id in segments.order}
    for change in changes:
        (folded[change.segment_id].add if change.kind == "segment_entered" else folded[change.segment_id].discard)(change.person_id)
    assert folded == engine.memberships()
    assert {change.reason for change in changes} >= {"event", "time"}
    # A fresh engine started from the store (SQL) holds the same.
    fresh = SegmentEngine(segments, engagement=traffic.database.config.engagement)
    fresh.backfill(traffic.database, end + timedelta(days=9))
    assert fresh.memberships() == engine.memberships()


def test_replaying_the_same_events_into_a_new_engine_gives_the_same_memberships(traffic: Traffic) -> None:
    segments = SegmentSet(ready_made())
    first, second = SegmentEngine(segments), SegmentEngine(segments)
    assert traffic.replay(first) == traffic.replay(second)
    assert first.memberships() == second.memberships()
    assert first.pending() == second.pending()


# -- random conditions -------------------------------------------------------------------------

_windows = st.sampled_from(["1h", "3h", "1d", "2d", "7d", "14d", "30d"])
_gaps = st.sampled_from(["1m", "10m", "1h", "6h", "2d"])
_events = st.sampled_from(["page_view", "view_product", "click", "search", "add_to_cart", "checkout_started", "purchase", "sign_up", "identify"])
_filters = st.sampled_from([
    {"field": "properties.category", "op": "in", "value": ["shoes", "bags", "beauty"]},
    {"field": "properties.category", "op": "neq", "value": "home"},
    {"field": "properties.price", "op": "gt", "value": 40},
    {"field": "properties.price", "op": "lte", "value": 25.5},
    {"field": "properties.on_sale", "op": "eq", "value": True},
    {"field": "properties.element", "op": "contains", "value": "cart"},
    {"field": "properties.element", "op": "regex", "value": "^(product|nav)_"},
    {"field": "properties.page_type", "op": "eq", "value": "product"},
    {"field": "properties.depth", "op": "gte", "value": 50},
    {"field": "properties.product_id", "op": "is_set"},
    {"field": "properties.query", "op": "is_not_set"},
    {"field": "country", "op": "in", "value": ["US", "GB"]},
    {"field": "device_type", "op": "eq", "value": "mobile"},
])
_where = st.lists(_filters, max_size=2, unique_by=lambda item: (item["field"], item["op"]))
_comparisons = st.dictionaries(st.sampled_from(["gte", "gt", "lte", "lt", "eq"]), st.integers(0, 6), min_size=1, max_size=2)
_step = st.builds(lambda event, where, within: {"event": event, "where": where, "within": within}, _events, _where, _gaps)

_leaves = st.one_of(
    st.builds(
        lambda event, where, count, window: {"performed": {"event": event, "where": where, "count": count, **({"in_last": window} if window else {})}},
        _events, _where, _comparisons, st.one_of(st.none(), _windows),
    ),
    st.builds(lambda event, where, key, window: {"last_performed": {"event": event, "where": where, key: window}},
              _events, _where, st.sampled_from(["more_than", "within"]), _windows),
    st.builds(lambda kind, key, window: {kind: {key: window}},
              st.sampled_from(["last_seen", "first_seen"]), st.sampled_from(["more_than", "within"]), _windows),
    st.builds(lambda count, window: {"sessions": {"count": count, **({"in_last": window} if window else {})}},
              _comparisons, st.one_of(st.none(), _windows)),
    st.builds(
        lambda first, rest, absence, window: {"sequence": {
            "steps": [{"event": first[0], "where": first[1]}, *[{k: v for k, v in step.items() if k != "within" or v} for step in rest]],
            **({"then_not": absence} if absence else {}),
            **({"in_last": window} if window else {}),
        }},
        st.tuples(_events, _where),
        st.lists(st.one_of(_step, st.builds(lambda e: {"event": e, "within": None}, _events)), max_size=2),
        st.one_of(st.none(), st.builds(lambda event, within: {"event": event, "within": within}, _events, _gaps)),
        st.one_of(st.none(), _windows),
    ),
    st.sampled_from([
        {"trait": {"field": "traits.plan", "op": "eq", "value": "premium"}},
        {"trait": {"field": "traits.signup_channel", "op": "in", "value": ["organic", "paid_search"]}},
        {"trait": {"field": "traits.email", "op": "regex", "value": "^[a-m]"}},
        {"trait": {"field": "traits.plan", "op": "is_not_set"}},
    ]),
    st.builds(lambda bound, name: {"score": {"name": "engagement", "value": {name: bound}}},
              st.sampled_from([0, 0.5, 3, 7.5, 20]), st.sampled_from(["gte", "lt", "gt"])),
    st.sampled_from([{"in_segment": definition.id} for definition in ready_made()]),
)
_conditions = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.builds(lambda items: {"and": items}, st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda items: {"or": items}, st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda item: {"not": item}, inner),
    ),
    max_leaves=5,
)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(documents=st.lists(_conditions, min_size=3, max_size=3), later=st.integers(0, 12 * 24))
def test_random_conditions_agree_with_sql(traffic: Traffic, documents: list[dict[str, Any]], later: int) -> None:
    definitions = [*ready_made(), *(segment(f"random_{index}", document) for index, document in enumerate(documents))]
    segments = SegmentSet(definitions)
    engine = SegmentEngine(segments, engagement=traffic.database.config.engagement)
    traffic.replay(engine)
    for moment in (traffic.end, traffic.end + timedelta(hours=later, minutes=7)):
        _agree(traffic, engine, segments, moment)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(documents=st.lists(_conditions, min_size=3, max_size=3))
def test_a_few_random_conditions_agree_with_sql(traffic: Traffic, documents: list[dict[str, Any]]) -> None:
    """The quick run of the random agreement check (the slow one tries more)."""
    segments = SegmentSet([*ready_made(), *(segment(f"random_{index}", document) for index, document in enumerate(documents))])
    engine = SegmentEngine(segments, engagement=traffic.database.config.engagement)
    traffic.replay(engine)
    _agree(traffic, engine, segments, traffic.end + timedelta(days=1, minutes=7))
