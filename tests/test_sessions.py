"""Sessionisation: a 30-minute inactivity gap by default, configurable."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from footfall.pipeline.sessions import SessionTail, assign_sessions

MINUTE = 60_000
GAP = 30 * MINUTE


def sessions(persons: list[str], minutes: list[float], tails: dict[str, SessionTail] | None = None, gap: int = GAP) -> list[str]:
    times = np.array([int(m * MINUTE) for m in minutes], dtype=np.int64)
    return assign_sessions(pa.array(persons), times, gap, tails or {}).session_ids.to_pylist()


def test_gap_splits_and_exactly_the_gap_does_not() -> None:
    # a: 0, 10, 40 (exactly 30 after 10: same session), 71 (31 later: new)
    assert sessions(["a"] * 4, [0, 10, 40, 71]) == ["a:0", "a:0", "a:0", f"a:{71 * MINUTE}"]


def test_out_of_order_rows_in_a_batch_get_time_order_sessions() -> None:
    assert sessions(["a", "a", "a"], [71, 0, 10]) == [f"a:{71 * MINUTE}", "a:0", "a:0"]


def test_persons_are_independent() -> None:
    assert sessions(["a", "b", "a", "b"], [0, 1, 2, 100]) == ["a:0", f"b:{MINUTE}", "a:0", f"b:{100 * MINUTE}"]


def test_configurable_gap() -> None:
    assert sessions(["a", "a"], [0, 10], gap=5 * MINUTE) == ["a:0", f"a:{10 * MINUTE}"]


def test_next_batch_continues_the_stored_session() -> None:
    tails = {"a": SessionTail(0, 20 * MINUTE)}
    assert sessions(["a", "a"], [45, 200], tails) == ["a:0", f"a:{200 * MINUTE}"]


def test_late_event_inside_the_stored_session_joins_it() -> None:
    tails = {"a": SessionTail(0, 100 * MINUTE)}
    # 50 is late (before the stored last event); 110 is 10 minutes after it.
    assert sessions(["a", "a"], [50, 110], tails) == ["a:0", "a:0"]


def test_new_tails_describe_the_latest_session() -> None:
    result = assign_sessions(pa.array(["a", "a", "b"]), np.array([0, 100 * MINUTE, 5]), GAP, {})
    assert result.tails == {"a": SessionTail(100 * MINUTE, 100 * MINUTE), "b": SessionTail(5, 5)}


def reference_sessions(persons: list[str], times: list[int], gap: int) -> list[str]:
    """One person at a time, in time order: the obvious loop."""
    ids = [""] * len(persons)
    for person in set(persons):
        rows = sorted((times[i], i) for i in range(len(persons)) if persons[i] == person)
        start = last = None
        for time, i in rows:
            if last is None or time - last > gap:
                start = time
            last = time
            ids[i] = f"{person}:{start}"
    return ids


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 10 * GAP)), max_size=40), st.integers(1, 3))
def test_matches_the_reference_and_split_batches_agree(rows: list[tuple[str, int]], splits: int) -> None:
    persons = [person for person, _ in rows]
    times = [time for _, time in rows]
    whole = assign_sessions(pa.array(persons, pa.string()), np.array(times, dtype=np.int64), GAP, {})
    assert whole.session_ids.to_pylist() == reference_sessions(persons, times, GAP)

    # Delivered in time-ordered batches, the assignment is the same.
    order = sorted(range(len(rows)), key=lambda i: times[i])
    tails: dict[str, SessionTail] = {}
    by_row: dict[int, str] = {}
    for chunk in np.array_split(np.array(order, dtype=np.int64), splits):
        indexes = [int(i) for i in chunk]
        part = assign_sessions(
            pa.array([persons[i] for i in indexes], pa.string()), np.array([times[i] for i in indexes], dtype=np.int64), GAP, tails
        )
        tails.update(part.tails)
        by_row.update(zip(indexes, part.session_ids.to_pylist(), strict=True))
    assert [by_row[i] for i in range(len(rows))] == whole.session_ids.to_pylist()
