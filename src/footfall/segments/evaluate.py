"""The stream evaluator: per-person state kept event by event, and each
condition compiled to a function of that state and a time.

An evaluator returns ``(value, recheck_at)``: the condition's value at ``now``
and the earliest time at which it could change with no new event (``NEVER``
when only an event can change it). ``recheck_at`` may be early, never late:
the scheduler re-evaluates then, so a person enters or leaves a segment when
time passes, not only when they act.

Windows count whole hours, as live profiles do (``footfall.profiles.state``):
at 14:35, "the last 7 days" starts at 14:00 seven days earlier, so an event at
``t`` leaves a window of length ``W`` at ``hour_of(t) + W + 1h``.

>>> window_start(hour_of(10 * HOUR_MS) + 35 * 60_000, 2 * HOUR_MS) == 8 * HOUR_MS
True
>>> leaves_window(8 * HOUR_MS + 1, 2 * HOUR_MS) == 11 * HOUR_MS
True
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from footfall.analytics.conditions import MISSING, Filter, lookup
from footfall.profiles.state import HOUR_MS, Weights, hour_of
from footfall.segments.language import (
    ENGAGEMENT,
    And,
    Comparison,
    Condition,
    EventSequence,
    FirstSeen,
    InSegment,
    LastPerformed,
    LastSeen,
    Not,
    Or,
    Performed,
    Score,
    SegmentSet,
    Sessions,
    Trait,
)

NEVER = 1 << 62

# (value at now, earliest time it may change without a new event)
Evaluation = tuple[bool, int]
Evaluator = Callable[["PersonState", int], Evaluation]


def window_start(now_ms: int, window_ms: int) -> int:
    """The first instant inside "the last ``window_ms``" at ``now_ms``."""
    return now_ms - now_ms % HOUR_MS - window_ms


def leaves_window(timestamp_ms: int, window_ms: int) -> int:
    """The first time at which an event at ``timestamp_ms`` is outside the window."""
    return timestamp_ms - timestamp_ms % HOUR_MS + window_ms + HOUR_MS


def _ms(duration: Any) -> int:
    return int(duration.total_seconds() * 1000)


# -- per-person state ---------------------------------------------------------------


class StreamState:
    """A person's events of one stream (an event name and filters): their times
    inside the longest window that reads them, how many ever, the latest."""

    __slots__ = ("latest", "times", "total")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.total = 0
        self.latest = -NEVER

    def absorb(self, other: StreamState) -> None:
        self.times = sorted(self.times + other.times)
        self.total += other.total
        self.latest = max(self.latest, other.latest)


class PersonState:
    __slots__ = (
        "_session_times", "engagement", "first_seen", "last_seen", "member_of", "person_id", "scores", "sessions",
        "since", "streams", "traits",
    )

    def __init__(self, person_id: str, streams: int) -> None:
        self.person_id = person_id
        self.first_seen = NEVER
        self.last_seen = -NEVER
        self.sessions: dict[str, int] = {}  # session id -> time of its latest event
        self._session_times: list[int] | None = None  # their times, sorted (None: to sort again)
        self.streams: list[StreamState | None] = [None] * streams
        self.engagement: dict[int, float] = {}  # hour -> weighted events
        self.traits: dict[str, Any] = {}
        self.scores: dict[str, float] = {}
        self.member_of = 0  # mask of the segments the person is in
        self.since: dict[int, int] = {}  # segment index -> when the person entered it (the engine keeps it)

    def see_session(self, session: str, moment: int) -> int | None:
        """Note an event of a session; the session's previous latest time
        (``-NEVER`` for a new session), or None if this event is not later."""
        latest = self.sessions.get(session, -NEVER)
        if latest >= moment:
            return None
        self.sessions[session] = moment
        times = self._session_times
        if times is not None:  # kept sorted in place: no sort per evaluation
            if latest != -NEVER:
                del times[bisect_left(times, latest)]
            insort(times, moment)
        return latest

    @property
    def session_times(self) -> list[int]:
        """The time of each session's latest event, sorted."""
        if self._session_times is None:
            self._session_times = sorted(self.sessions.values())
        return self._session_times

    def absorb(self, other: PersonState) -> None:
        """Fold in the state of a person merged into this one."""
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        for session, latest in other.sessions.items():
            self.see_session(session, latest)
        for index, theirs in enumerate(other.streams):
            if theirs is None:
                continue
            mine = self.streams[index]
            if mine is None:
                self.streams[index] = theirs
            else:
                mine.absorb(theirs)
        for hour, weight in other.engagement.items():
            self.engagement[hour] = self.engagement.get(hour, 0.0) + weight
        self.traits = {**other.traits, **self.traits}
        self.scores = {**other.scores, **self.scores}


# -- streams: which events a condition reads -------------------------------------------


@dataclass
class Stream:
    """Events of one name passing the same filters; shared by every condition that reads them."""

    index: int
    event: str
    where: tuple[Filter, ...]
    keep_times: bool = False
    # Times older than this window are dropped (None: kept for ever).
    window_ms: int | None = 0
    feature: int = 0  # its bit among the features segments read
    _tests: list[tuple[Any, Filter]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._tests = [(item.target, item) for item in self.where]

    @property
    def needs_properties(self) -> bool:
        return any(target.kind == "event_property" for target, _ in self._tests)

    @property
    def columns(self) -> set[str]:
        return {target.column for target, _ in self._tests if target.kind == "column"}

    def need(self, window_ms: int | None, times: bool) -> None:
        if times:
            if not self.keep_times:
                self.keep_times, self.window_ms = True, window_ms
            elif self.window_ms is not None:
                self.window_ms = None if window_ms is None else max(self.window_ms, window_ms)

    def matches(self, properties: Mapping[str, Any], columns: Mapping[str, Any]) -> bool:
        for target, test in self._tests:
            if target.kind == "column":
                stored = columns.get(target.column)
                value = MISSING if stored is None else stored
            else:
                value = lookup(properties, target.path)
            if not test.matches_value(value):
                return False
        return True

    def add(self, state: PersonState, timestamp: int, now_ms: int) -> None:
        stream = state.streams[self.index]
        if stream is None:
            stream = state.streams[self.index] = StreamState()
        stream.total += 1
        if timestamp > stream.latest:
            stream.latest = timestamp
        if not self.keep_times:
            return
        times = stream.times
        if self.window_ms is not None:
            horizon = window_start(now_ms, self.window_ms)
            if timestamp < horizon:
                return
            if times and times[0] < horizon:
                del times[: bisect_left(times, horizon)]
        if not times or timestamp >= times[-1]:
            times.append(timestamp)
        else:
            insort(times, timestamp)


# -- the plan: evaluators and what each segment reads ------------------------------------


# Features: the parts of a person's state a segment reads. For each, a
# segment's direction says how new events there can move its answer: only
# towards true (UP: more views, a later last event), only towards false
# (DOWN: "did not buy"), or either way. A member whose touched features only
# push UP, or a non-member whose touched features only push DOWN, need not be
# evaluated: their answer cannot have changed, and their scheduled recheck
# is still early enough (events in the same direction only move it later).
UP, DOWN, BOTH = 1, 2, 3
LAST_SEEN, FIRST_SEEN, SESSIONS = "last_seen", "first_seen", "sessions"
ENGAGEMENT_SCORE, TRAITS = "engagement", "traits"
Directions = dict[object, int]


def _merge(*parts: Directions) -> Directions:
    merged: Directions = {}
    for part in parts:
        for feature, direction in part.items():
            merged[feature] = merged.get(feature, 0) | direction
    return merged


def _count_direction(test: Comparison) -> int:
    """How a count passing ``test`` moves as events add to it."""
    names = {name for name, _ in test.terms}
    if names <= {"gte", "gt"}:
        return UP
    if names <= {"lte", "lt"}:
        return DOWN
    return BOTH


class Plan:
    """A segment set compiled for the stream: one evaluator per segment (in
    dependency order), the streams they read, and, per feature, masks of the
    segments that read it and of those it can only push up or down."""

    def __init__(self, segments: SegmentSet, weights: Weights, members: list[dict[str, int]]) -> None:
        self.segments = segments
        self.ids: tuple[str, ...] = segments.order
        self.index = {segment: position for position, segment in enumerate(self.ids)}
        self.weights = weights
        self.members = members
        self.streams: list[Stream] = []
        self._streams_by_key: dict[tuple[str, tuple[Filter, ...]], Stream] = {}
        self.sessions_window_ms: int | None = 0  # sessions older than this are dropped (None: kept)
        self.shortest_sessions_window_ms: int | None = None
        self.needs_sessions = False
        self.scores: dict[str, int] = {}  # model score name -> its feature bit
        self.dependents = [0] * len(self.ids)
        self.evaluators: list[Evaluator] = []
        self._features: dict[object, int] = {}  # feature -> bit position
        self.reads: list[int] = []
        self.up: list[int] = []
        self.down: list[int] = []
        for position, segment in enumerate(self.ids):
            evaluator, directions = self._compile(segments[segment].condition)
            self.evaluators.append(evaluator)
            for feature, direction in directions.items():
                bit = self.feature(feature)
                self.reads[bit] |= 1 << position
                if direction == UP:
                    self.up[bit] |= 1 << position
                elif direction == DOWN:
                    self.down[bit] |= 1 << position
            for reference in segments[segment].references():
                self.dependents[self.index[reference]] |= 1 << position
        self.all = (1 << len(self.ids)) - 1
        # The segments a person with no events and no traits is in (whatever the time).
        nobody = PersonState("", len(self.streams))
        for position, evaluator in enumerate(self.evaluators):
            if evaluator(nobody, 0)[0]:
                nobody.member_of |= 1 << position
        self.empty = nobody.member_of
        self.last_seen = 1 << self.feature(LAST_SEEN)
        self.first_seen = 1 << self.feature(FIRST_SEEN)
        self.sessions = 1 << self.feature(SESSIONS)
        self.engagement = 1 << self.feature(ENGAGEMENT_SCORE) if self.reads[self.feature(ENGAGEMENT_SCORE)] else 0
        self.traits = 1 << self.feature(TRAITS) if self.reads[self.feature(TRAITS)] else 0
        for stream in self.streams:
            stream.feature = 1 << self.feature(("stream", stream.index))
        self.by_event: dict[str, list[Stream]] = {}
        for stream in self.streams:
            self.by_event.setdefault(stream.event, []).append(stream)
        self.columns = sorted({column for stream in self.streams for column in stream.columns})

    def feature(self, key: object) -> int:
        bit = self._features.get(key)
        if bit is None:
            bit = self._features[key] = len(self._features)
            self.reads.append(0)
            self.up.append(0)
            self.down.append(0)
        return bit

    def to_evaluate(self, features: int, member_of: int) -> int:
        """The segments to evaluate for a person after events touched ``features``."""
        reads, all_up, all_down = 0, -1, -1
        while features:
            lowest = features & -features
            bit = lowest.bit_length() - 1
            features ^= lowest
            readers = self.reads[bit]
            reads |= readers
            all_up &= self.up[bit] | ~readers
            all_down &= self.down[bit] | ~readers
        return reads & ~((member_of & all_up) | (~member_of & all_down))

    def stream(self, event: str, where: tuple[Filter, ...], window_ms: int | None, times: bool) -> Stream:
        key = (event, where)
        stream = self._streams_by_key.get(key)
        if stream is None:
            stream = Stream(len(self.streams), event, where)
            self._streams_by_key[key] = stream
            self.streams.append(stream)
        stream.need(window_ms, times)
        return stream

    def needs_properties(self, event: str) -> bool:
        return (event in self.weights.by_event and self.engagement != 0) or any(
            stream.needs_properties for stream in self.by_event.get(event, ())
        )

    def _compile(self, condition: Condition) -> tuple[Evaluator, Directions]:
        compiler = _COMPILERS.get(type(condition))
        if compiler is None:
            raise TypeError(f"no stream evaluator for {type(condition).__name__}")
        return compiler(self, condition)


def _count_change(times: list[int], first: int, count: int, value: bool, test: Comparison, window_ms: int) -> int:
    """When a count of in-window times, falling as they leave, first changes the test's value."""
    holds = test.predicate
    for target in test.count_change_points:
        if target < count and holds(target) != value:
            return leaves_window(times[first + count - target - 1], window_ms)
    return NEVER


def _performed(plan: Plan, condition: Performed) -> tuple[Evaluator, Directions]:
    test = condition.count
    holds = test.predicate
    if condition.in_last is None:
        index = plan.stream(condition.event, condition.where, None, times=False).index

        def ever(state: PersonState, now: int) -> Evaluation:
            stream = state.streams[index]
            return holds(stream.total if stream is not None else 0), NEVER

        return ever, {("stream", index): _count_direction(test)}
    window = _ms(condition.in_last)
    index = plan.stream(condition.event, condition.where, window, times=True).index
    at_zero = holds(0)

    def in_window(state: PersonState, now: int) -> Evaluation:
        stream = state.streams[index]
        if stream is None:
            return at_zero, NEVER
        times = stream.times
        first = bisect_left(times, now - now % HOUR_MS - window)
        count = len(times) - first
        value = holds(count)
        return value, _count_change(times, first, count, value, test, window)

    return in_window, {("stream", index): _count_direction(test)}


def _last_performed(plan: Plan, condition: LastPerformed) -> tuple[Evaluator, Directions]:
    index = plan.stream(condition.event, condition.where, None, times=False).index
    window = _ms(condition.window)
    within = condition.within is not None

    def evaluate(state: PersonState, now: int) -> Evaluation:
        stream = state.streams[index]
        if stream is None or stream.total == 0:
            return False, NEVER
        recent = stream.latest >= now - now % HOUR_MS - window
        return recent == within, leaves_window(stream.latest, window) if recent else NEVER

    # A first event, however old, can make "more than" true; a recent one false.
    return evaluate, {("stream", index): UP if within else BOTH}


def _last_seen(plan: Plan, condition: LastSeen) -> tuple[Evaluator, Directions]:
    window = _ms(condition.window)
    within = condition.within is not None

    def evaluate(state: PersonState, now: int) -> Evaluation:
        recent = state.last_seen >= now - now % HOUR_MS - window
        return recent == within, leaves_window(state.last_seen, window) if recent else NEVER

    return evaluate, {LAST_SEEN: UP if within else DOWN}


def _first_seen(plan: Plan, condition: FirstSeen) -> tuple[Evaluator, Directions]:
    window = _ms(condition.window)
    within = condition.within is not None

    def evaluate(state: PersonState, now: int) -> Evaluation:
        if state.first_seen == NEVER:
            return False, NEVER
        recent = state.first_seen >= now - now % HOUR_MS - window
        return recent == within, leaves_window(state.first_seen, window) if recent else NEVER

    # A first event can make "within" true; later ones only move it earlier.
    return evaluate, {FIRST_SEEN: BOTH if within else UP}


def _sessions(plan: Plan, condition: Sessions) -> tuple[Evaluator, Directions]:
    plan.needs_sessions = True
    test = condition.count
    holds = test.predicate
    directions: Directions = {SESSIONS: _count_direction(test)}
    if condition.in_last is None:
        plan.sessions_window_ms = None

        def ever(state: PersonState, now: int) -> Evaluation:
            return holds(len(state.sessions)), NEVER

        return ever, directions
    window = _ms(condition.in_last)
    if plan.sessions_window_ms is not None:
        plan.sessions_window_ms = max(plan.sessions_window_ms, window)
    shortest = plan.shortest_sessions_window_ms
    plan.shortest_sessions_window_ms = window if shortest is None else min(shortest, window)

    def in_window(state: PersonState, now: int) -> Evaluation:
        times = state.session_times
        first = bisect_left(times, now - now % HOUR_MS - window)
        count = len(times) - first
        value = holds(count)
        return value, _count_change(times, first, count, value, test, window)

    return in_window, directions


def _sequence(plan: Plan, condition: EventSequence) -> tuple[Evaluator, Directions]:
    window = _ms(condition.in_last) if condition.in_last is not None else None
    steps = [
        (plan.stream(step.event, step.where, window, times=True).index, _ms(step.within) if step.within else None)
        for step in condition.steps
    ]
    absence = condition.then_not
    absent_index = plan.stream(absence.event, absence.where, window, times=True).index if absence else None
    absent_for = _ms(absence.within) if absence else 0
    first_index = steps[0][0]

    def evaluate(state: PersonState, now: int) -> Evaluation:
        start = now - now % HOUR_MS - window if window is not None else None
        reached: list[int] = []
        for position, (index, within) in enumerate(steps):
            stream = state.streams[index]
            if stream is None:
                return False, NEVER
            times = stream.times
            candidates = times[bisect_left(times, start) :] if start is not None else times
            if position == 0:
                reached = candidates
                continue
            following = []
            for moment in candidates:
                before = bisect_left(reached, moment) - 1  # the latest reached step strictly before
                if before >= 0 and (within is None or moment - reached[before] <= within):
                    following.append(moment)
            reached = following
            if not reached:
                return False, NEVER
        if not reached:
            return False, NEVER
        # A chain lives while its first step is in the window; the oldest first step leaves first.
        expires = NEVER
        if start is not None and window is not None:
            first_times = state.streams[first_index].times  # type: ignore[union-attr]
            expires = leaves_window(first_times[bisect_left(first_times, start)], window)
        if absent_index is None:
            return True, expires
        absent = state.streams[absent_index]
        absent_times = absent.times if absent is not None else []
        pending = NEVER
        for moment in reached:
            after = bisect_right(absent_times, moment)
            if after < len(absent_times) and absent_times[after] < moment + absent_for:
                continue  # done within the time: this chain does not count
            deadline = moment + absent_for
            if deadline <= now:
                return True, expires
            pending = min(pending, deadline)
        return False, pending

    directions: Directions = {("stream", index): UP for index, _ in steps}
    if absent_index is not None:
        directions = _merge(directions, {("stream", absent_index): DOWN})
    return evaluate, directions


def _trait(plan: Plan, condition: Trait) -> tuple[Evaluator, Directions]:
    path = condition.filter.target.path
    test = condition.filter

    def evaluate(state: PersonState, now: int) -> Evaluation:
        return test.matches_value(lookup(state.traits, path)), NEVER

    return evaluate, {TRAITS: BOTH}


def engagement_score(hours: Mapping[int, float], now_ms: int, weights: Weights) -> float:
    """The engagement score, exactly as ``ProfileBook.engagement_score`` computes it."""
    now_hour = hour_of(now_ms)
    start = now_hour - weights.window_ms
    return sum(weight * weights.decay(max(0, now_hour - hour)) for hour, weight in hours.items() if hour >= start)


def _score_change(hours: Mapping[int, float], now: int, test: Comparison, weights: Weights) -> int:
    """The first hour at which the score may change the test's value.

    With weights of one sign the score only falls as time passes, so each
    term flips at most once (found by bisection over hours); a value within a
    hair of a bound counts as flipped, so float noise only makes it early."""
    now_hour = hour_of(now)
    live = [hour for hour in hours if hour >= now_hour - weights.window_ms]
    if not live:
        return NEVER
    if any(hours[hour] < 0 for hour in live):
        return now_hour + HOUR_MS
    last = (max(live) + weights.window_ms + HOUR_MS - now_hour) // HOUR_MS  # all gone by then
    soonest = NEVER
    score = engagement_score(hours, now, weights)
    for name, bound in test.terms:
        holds = Comparison(((name, bound),)).holds

        def changed(step: int, holds: Callable[[float], bool] = holds, bound: float = bound) -> bool:
            later = engagement_score(hours, now_hour + step * HOUR_MS, weights)
            return holds(later) != holds(score) or abs(later - bound) <= 1e-9 * (1 + abs(bound))

        if not changed(last):
            continue
        low, high = 1, last
        while low < high:
            middle = (low + high) // 2
            if changed(middle):
                high = middle
            else:
                low = middle + 1
        soonest = min(soonest, now_hour + low * HOUR_MS)
    return soonest


def _score(plan: Plan, condition: Score) -> tuple[Evaluator, Directions]:
    test = condition.value
    holds = test.predicate
    if condition.name == ENGAGEMENT:
        weights = plan.weights

        def engagement(state: PersonState, now: int) -> Evaluation:
            value = holds(engagement_score(state.engagement, now, weights))
            return value, _score_change(state.engagement, now, test, weights)

        one_sign = all(weight >= 0 for weight in weights.by_event.values())
        return engagement, {ENGAGEMENT_SCORE: _count_direction(test) if one_sign else BOTH}
    name = condition.name

    def model(state: PersonState, now: int) -> Evaluation:
        score = state.scores.get(name)
        return (score is not None and holds(score)), NEVER

    plan.scores[name] = 1 << plan.feature(("score", name))
    return model, {("score", name): BOTH}


def _in_segment(plan: Plan, condition: InSegment) -> tuple[Evaluator, Directions]:
    bit = 1 << plan.index[condition.segment]

    def evaluate(state: PersonState, now: int) -> Evaluation:
        return state.member_of & bit != 0, NEVER

    # A change of the other segment re-evaluates this one (Plan.dependents).
    return evaluate, {}


def _and(plan: Plan, condition: And) -> tuple[Evaluator, Directions]:
    compiled = [plan._compile(child) for child in condition.conditions]
    children = [evaluator for evaluator, _ in compiled]

    def evaluate(state: PersonState, now: int) -> Evaluation:
        # True: any part may turn false first. False: it turns true only once
        # every false part has, so not before the last of their rechecks.
        soonest, latest_false, value = NEVER, 0, True
        for child in children:
            holds, recheck = child(state, now)
            if holds:
                if recheck < soonest:
                    soonest = recheck
            else:
                value = False
                if recheck > latest_false:
                    latest_false = recheck
        return (True, soonest) if value else (False, latest_false)

    return evaluate, _merge(*(directions for _, directions in compiled))


def _or(plan: Plan, condition: Or) -> tuple[Evaluator, Directions]:
    compiled = [plan._compile(child) for child in condition.conditions]
    children = [evaluator for evaluator, _ in compiled]

    def evaluate(state: PersonState, now: int) -> Evaluation:
        soonest, latest_true, value = NEVER, 0, False
        for child in children:
            holds, recheck = child(state, now)
            if holds:
                value = True
                if recheck > latest_true:
                    latest_true = recheck
            elif recheck < soonest:
                soonest = recheck
        return (True, latest_true) if value else (False, soonest)

    return evaluate, _merge(*(directions for _, directions in compiled))


def _not(plan: Plan, condition: Not) -> tuple[Evaluator, Directions]:
    child, directions = plan._compile(condition.condition)

    def evaluate(state: PersonState, now: int) -> Evaluation:
        holds, recheck = child(state, now)
        return not holds, recheck

    swapped = {UP: DOWN, DOWN: UP, BOTH: BOTH}
    return evaluate, {feature: swapped[direction] for feature, direction in directions.items()}


_COMPILERS: dict[type[Any], Callable[[Plan, Any], tuple[Evaluator, Directions]]] = {
    Performed: _performed,
    LastPerformed: _last_performed,
    LastSeen: _last_seen,
    FirstSeen: _first_seen,
    Sessions: _sessions,
    EventSequence: _sequence,
    Trait: _trait,
    Score: _score,
    InSegment: _in_segment,
    And: _and,
    Or: _or,
    Not: _not,
}
