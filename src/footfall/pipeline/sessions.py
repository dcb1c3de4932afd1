"""Sessionisation: split each person's events where inactivity exceeds a gap.

A session's id is ``{person_id}:{start in epoch ms}``, so it is derived from
the events alone and a replay assigns the same ids. Events are processed in
time order per person whatever order a batch lists them in.

Across batches, a person's *tail* (the start and last event time of their
latest session) decides whether the first events of a new batch continue it.
An event that arrives late, in a later batch, joins the tail session when it
lies within the gap of that session's span; one older than that starts a
session of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class SessionTail(NamedTuple):
    start_ms: int
    last_ms: int


class Sessions(NamedTuple):
    session_ids: pa.Array  # aligned with the input rows
    tails: dict[str, SessionTail]  # the latest session of every person in the batch


def session_id(person_id: str, start_ms: int) -> str:
    return f"{person_id}:{start_ms}"


def assign_sessions(
    person_ids: pa.Array | pa.ChunkedArray,
    timestamps_ms: np.ndarray,
    gap_ms: int,
    tails: Mapping[str, SessionTail],
) -> Sessions:
    """Session ids for events of many persons.

    >>> s = assign_sessions(pa.array(["a", "a", "b", "a"]), np.array([0, 60_000, 0, 7_200_000]), 1_800_000, {})
    >>> s.session_ids.to_pylist()
    ['a:0', 'a:0', 'b:0', 'a:7200000']
    """
    count = len(person_ids)
    if count == 0:
        return Sessions(pa.array([], pa.string()), {})
    encoded = pc.dictionary_encode(person_ids)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = encoded.dictionary.to_pylist()
    timestamps = np.asarray(timestamps_ms, dtype=np.int64)

    # Stable sort by (person, time): ties keep their input order.
    order = np.lexsort((np.arange(count), timestamps, codes))
    sorted_codes = codes[order]
    sorted_times = timestamps[order]

    first_of_person = np.ones(count, dtype=bool)
    first_of_person[1:] = sorted_codes[1:] != sorted_codes[:-1]

    # Each person's stored tail, by code (has_tail False: none stored).
    stored = [tails.get(name) for name in names]
    has_tail = np.fromiter((tail is not None for tail in stored), dtype=bool, count=len(names))
    tail_start = np.fromiter((tail.start_ms if tail is not None else 0 for tail in stored), dtype=np.int64, count=len(names))
    tail_last = np.fromiter((tail.last_ms if tail is not None else 0 for tail in stored), dtype=np.int64, count=len(names))

    # A person whose stored session reaches the batch's first event continues
    # it; their later events then measure the gap from the stored last event
    # too (a late event must not split a session it sits inside).
    first_positions = np.flatnonzero(first_of_person)
    first_codes = sorted_codes[first_positions]
    first_times = sorted_times[first_positions]
    continued = np.zeros(len(names), dtype=bool)
    continued[first_codes] = (
        has_tail[first_codes]
        & (tail_start[first_codes] - gap_ms <= first_times)
        & (first_times <= tail_last[first_codes] + gap_ms)
    )
    continued_last = np.where(continued, tail_last, np.iinfo(np.int64).min)
    continued_start = np.where(continued, tail_start, 0)

    previous_time = np.empty(count, dtype=np.int64)
    previous_time[0] = 0
    previous_time[1:] = sorted_times[:-1]
    previous_time = np.maximum(previous_time, continued_last[sorted_codes])
    starts = first_of_person & ~continued[sorted_codes]
    starts |= ~first_of_person & (sorted_times - previous_time > gap_ms)

    start_ms = np.where(starts, sorted_times, 0)
    # The continued session keeps its stored id.
    start_ms = np.where(first_of_person & continued[sorted_codes], continued_start[sorted_codes], start_ms)

    # Every event takes the start of the latest session start at or before it.
    start_index = np.maximum.accumulate(np.where(first_of_person | starts, np.arange(count), 0))
    session_start = start_ms[start_index]

    sorted_persons = pc.take(encoded.dictionary, pa.array(sorted_codes))
    sorted_ids = pc.binary_join_element_wise(
        sorted_persons, pc.cast(pa.array(session_start), pa.string()), ":"
    )
    inverse = np.empty(count, dtype=np.int64)
    inverse[order] = np.arange(count)
    session_ids = pc.take(sorted_ids, pa.array(inverse))

    last_of_person = np.ones(count, dtype=bool)
    last_of_person[:-1] = sorted_codes[:-1] != sorted_codes[1:]
    last_positions = np.flatnonzero(last_of_person)
    codes_last = sorted_codes[last_positions]
    start, last = session_start[last_positions], sorted_times[last_positions]
    had, previous_start, previous_last = has_tail[codes_last], tail_start[codes_last], tail_last[codes_last]
    # Only late events arrived: the stored session is still the latest. The
    # same session continued: it ends at the later of the two last events.
    kept = had & (previous_start > start)
    same = had & (previous_start == start)
    new_start = np.where(kept, previous_start, start)
    new_last = np.where(kept, previous_last, np.where(same, np.maximum(last, previous_last), last))
    new_tails = {
        names[code]: SessionTail(begun, ended)
        for code, begun, ended in zip(codes_last.tolist(), new_start.tolist(), new_last.tolist(), strict=True)
    }
    return Sessions(session_ids, new_tails)
