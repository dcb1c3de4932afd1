"""The durable scheduler: memberships and pending time-based changes survive a
restart; a batch the store took but the engine never saw is caught up; a
changed definition is re-evaluated; and the changes emitted before and after
a restart add up to the memberships, on both backends."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from footfall.pipeline import Pipeline
from footfall.segments import (
    STATE_FILE,
    MembershipChange,
    SegmentDefinition,
    SegmentEngine,
    SegmentSet,
    StateFile,
    parse_definition,
    ready_made,
    run_members,
)
from footfall.segments.schedule import DueQueue
from footfall.segments.templates import cart_abandoners
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database

from .timeline import T0, at, track


class Hook:
    """The pipeline's profiles hook, handing stored batches to whichever engine is attached."""

    def __init__(self) -> None:
        self.engine: SegmentEngine | None = None
        self.batches: list[tuple[pa.Table, list[tuple[str, str]], pa.Table]] = []
        self.changes: list[MembershipChange] = []
        self.now = T0

    def load(self) -> Hook:
        return self

    def record(self, events: pa.Table, persons: pa.Table, merges: Sequence[tuple[str, str]]) -> None:
        self.batches.append((events, list(merges), persons))
        if self.engine is not None:
            self.changes += self.engine.on_batch(events, merges, persons, now=self.now)


def segment(segment_id: str, condition: dict[str, Any]) -> SegmentDefinition:
    return parse_definition({"id": segment_id, "condition": condition})


def fold(changes: Iterable[MembershipChange], segments: Iterable[str]) -> dict[str, set[str]]:
    members: dict[str, set[str]] = {segment_id: set() for segment_id in segments}
    for change in changes:
        group = members.setdefault(change.segment_id, set())
        if change.kind == "segment_entered":
            assert change.person_id not in group, f"entered twice: {change}"
            group.add(change.person_id)
        else:
            assert change.person_id in group, f"exited without entering: {change}"
            group.discard(change.person_id)
    return members


def test_pending_time_based_entries_and_exits_survive_a_restart(database: Database, tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    segments = [cart_abandoners(wait="24h", in_last="7d"), segment("recent", {"last_seen": {"within": "1d"}})]
    hook = Hook()
    hook.engine = SegmentEngine(segments, state=StateFile(path))
    pipeline = Pipeline(database, profiles=hook)  # type: ignore[arg-type]
    pipeline.ingest_events([track("add_to_cart", "-1h30m", user="bob"), track("page_view", "-3h", user="ann")])
    before = hook.engine.pending()
    # ann's 09:00 view leaves the day window at 10:00 tomorrow, bob's 10:30 cart
    # at 11:00; his 24 hours to buy end at 10:30.
    assert [(when, segment_id) for when, segment_id, _ in before] == [
        (at("22h"), "recent"),
        (at("22h30m"), "cart_abandoners"),
        (at("23h"), "recent"),
    ]
    hook.engine.state.close()  # type: ignore[union-attr]

    # A new process: the same definitions, the state file, the store.
    restarted = SegmentEngine(segments, state=StateFile(path))
    assert restarted.restore(database) == []
    assert restarted.pending() == before
    changes = restarted.advance(at("1d"))
    assert [(change.kind, change.segment_id, change.at, change.reason) for change in changes] == [
        ("segment_exited", "recent", at("22h"), "time"),
        ("segment_entered", "cart_abandoners", at("22h30m"), "time"),
        ("segment_exited", "recent", at("23h"), "time"),
    ]
    # ... and once more after that: nothing is fired twice.
    again = SegmentEngine(segments, state=StateFile(path))
    assert again.restore(database) == []
    assert again.advance(at("2d")) == []
    assert again.memberships() == restarted.memberships()


def test_a_restart_catches_up_with_a_batch_the_engine_missed_and_agrees_with_sql(database: Database, tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    segments = SegmentSet([*ready_made(), segment("many_carts", {"performed": {"event": "add_to_cart", "count": {"gte": 2}}})])
    tables = list(Simulation(SimulationSpec(users=120, days=20, seed=4)).batches(max_rows=500))
    assert len(tables) >= 6
    hook = Hook()
    pipeline = Pipeline(database, profiles=hook)  # type: ignore[arg-type]
    first = SegmentEngine(segments, state=StateFile(path))
    hook.engine = first
    half = len(tables) // 2

    def ingest(table: pa.Table) -> None:
        hook.now = max(hook.now if hook.batches else datetime.min.replace(tzinfo=T0.tzinfo), max(table["timestamp"].to_pylist()))
        pipeline.ingest(table)

    for table in tables[:half]:
        ingest(table)
    # The store takes a batch, and the worker stops before the engine sees it.
    hook.engine = None
    ingest(tables[half])
    first.state.close()  # type: ignore[union-attr]

    second = SegmentEngine(segments, state=StateFile(path))
    before_restart = list(hook.changes)
    restored = second.restore(database)
    assert restored
    assert {change.reason for change in restored} == {"reconcile"}
    hook.engine = second
    for table in tables[half + 1 :]:
        ingest(table)
    end = hook.now + timedelta(days=3, hours=5)
    later = second.advance(end)

    # The changes emitted before and after the restart add up to the memberships.
    after_restart = hook.changes[len(before_restart) :]
    assert fold([*before_restart, *restored, *after_restart, *later], segments.order) == second.memberships()
    # An engine that saw every batch, and the SQL, agree with it.
    reference = SegmentEngine(segments)
    clock = None
    for events, merges, persons in hook.batches:
        latest = max(events["timestamp"].to_pylist())
        clock = latest if clock is None else max(clock, latest)
        reference.on_batch(events, merges, persons, now=clock)
    reference.advance(end)
    assert reference.memberships() == second.memberships()
    for definition in segments:
        assert set(run_members(database, definition.condition, end, segments=segments)) == second.members(definition.id)


def test_a_changed_definition_is_evaluated_again_and_a_removed_one_forgotten(database: Database, tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    hook = Hook()
    pipeline = Pipeline(database, profiles=hook)  # type: ignore[arg-type]
    recent = segment("recent", {"last_seen": {"within": "1d"}})
    carts = segment("carts", {"performed": {"event": "add_to_cart"}})
    hook.engine = SegmentEngine([recent, carts, segment("gone", {"first_seen": {"within": "30d"}})], state=StateFile(path))
    pipeline.ingest_events([track("add_to_cart", "-2d", user="ann"), track("page_view", "-1h", user="bob")])
    since = hook.engine.member_since("carts", next(iter(hook.engine.members("carts"))))
    hook.engine.state.close()  # type: ignore[union-attr]

    wider = segment("recent", {"last_seen": {"within": "7d"}})
    restarted = SegmentEngine([wider, carts], state=StateFile(path))
    changes = restarted.restore(database)
    assert [(change.kind, change.segment_id, change.reason) for change in changes] == [
        ("segment_exited", "gone", "definition"), ("segment_exited", "gone", "definition"),
        ("segment_entered", "recent", "definition"),
    ]
    assert len(restarted.members("recent")) == 2
    assert restarted.member_since("carts", next(iter(restarted.members("carts")))) == since
    saved = StateFile(path).load()
    assert set(saved.members) == {"recent", "carts"}
    assert set(saved.fingerprints) == {"recent", "carts"}


def test_without_a_state_file_restore_is_a_backfill(database: Database) -> None:
    hook = Hook()
    Pipeline(database, profiles=hook).ingest_events([track("page_view", "-1h", user="ann")])  # type: ignore[arg-type]
    engine = SegmentEngine(ready_made(), clock=lambda: T0)
    changes = engine.restore(database)
    assert [(change.segment_id, change.reason) for change in changes] == [("active_recent", "backfill")]


def test_change_ids_are_stable_so_a_repeated_change_dedups_in_the_store() -> None:
    change = MembershipChange("segment_entered", "lapsed", "p1", T0, "time")
    assert change.event_id == MembershipChange("segment_entered", "lapsed", "p1", T0, "reconcile").event_id
    assert change.event_id != MembershipChange("segment_exited", "lapsed", "p1", T0, "time").event_id
    assert change.properties() == {"segment_id": "lapsed", "reason": "time"}


def test_the_due_queue_keeps_one_time_per_segment_and_person() -> None:
    queue = DueQueue()
    for when in range(5000, 0, -1):
        queue.set(0, "ann", when)
    queue.set(1, "bob", 3)
    assert len(queue) == 2
    assert list(queue.pop_due(10)) == [(1, 0, "ann"), (3, 1, "bob")]
    assert queue.set(0, "ann", None) is False
