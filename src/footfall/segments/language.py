"""The condition language of segments: frozen, typed conditions, built in
Python or parsed from JSON (or YAML), each validated where it is built.

A condition is an object with one key, its kind:

>>> condition = parse_condition({"performed": {"event": "view_product", "count": {"gte": 3}, "in_last": "7d"}})
>>> condition
Performed(event='view_product', where=(), count=Comparison(terms=(('gte', 3),)), in_last=datetime.timedelta(days=7))
>>> condition.to_json()
{'performed': {'event': 'view_product', 'count': {'gte': 3}, 'in_last': '7d'}}

Errors name the JSON path of the part at fault:

>>> parse_condition({"and": [{"last_seen": {"within": "7d"}}, {"performed": {"event": "x", "in_last": "90m"}}]})
Traceback (most recent call last):
...
footfall.segments.errors.ConditionError: $.and[1].performed.in_last: windows count whole hours; got '90m' (use e.g. '2h' or '7d')

The exact semantics of each kind (windows, sequences, absence) are in
docs/segments.md; the evaluators are ``footfall.segments.sql`` (batch) and
``footfall.segments.evaluate`` (stream).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import timedelta
from functools import cached_property
from typing import Any, ClassVar, Literal

from footfall.analytics.conditions import Filter
from footfall.analytics.errors import SpecError
from footfall.durations import parse_duration
from footfall.events.record import SYSTEM_EVENTS as SYSTEM_EVENTS
from footfall.segments.errors import ConditionError

# Membership changes may be stored as events; conditions never read them, so
# entering a segment cannot change what the segment sees (no feedback loops).
MAX_WINDOW = timedelta(days=400)
MAX_DEPTH = 32
HOUR = timedelta(hours=1)

_SEGMENT_ID = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")
_SCORE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-.]{0,63}")
ENGAGEMENT = "engagement"


# -- comparisons: one table for SQL and Python -----------------------------------


@dataclass(frozen=True)
class ComparisonOperator:
    name: str
    sql: str
    python: Callable[[Any, Any], bool]


COMPARISONS: Mapping[str, ComparisonOperator] = {
    op.name: op
    for op in (
        ComparisonOperator("gte", ">=", operator.ge),
        ComparisonOperator("gt", ">", operator.gt),
        ComparisonOperator("lte", "<=", operator.le),
        ComparisonOperator("lt", "<", operator.lt),
        ComparisonOperator("eq", "=", operator.eq),
    )
}


@dataclass(frozen=True)
class Comparison:
    """A count or score test, ``{"gte": 3}`` or a range ``{"gte": 2, "lt": 5}``:
    every term must hold.

    >>> Comparison.of(gte=2, lt=5).holds(4), Comparison.of(gte=2, lt=5).holds(5)
    (True, False)
    >>> Comparison.of(gte=2, lt=5).sql("count(*)")
    '(count(*) >= 2 AND count(*) < 5)'
    """

    terms: tuple[tuple[str, int | float], ...]

    def __post_init__(self) -> None:
        if not self.terms:
            raise ConditionError("", f"give at least one comparison: {', '.join(COMPARISONS)}")
        for name, value in self.terms:
            if name not in COMPARISONS:
                raise ConditionError(name, f"unknown comparison {name!r}; use one of {', '.join(COMPARISONS)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value in (
                float("inf"),
                float("-inf"),
            ):
                raise ConditionError(name, f"give a finite number; got {value!r}")

    @classmethod
    def of(cls, **terms: int | float) -> Comparison:
        return cls(tuple(terms.items()))

    @classmethod
    def parse(cls, value: object) -> Comparison:
        if isinstance(value, Comparison):
            return value
        if not isinstance(value, Mapping) or not value:
            raise ConditionError("", f"give comparisons as an object, e.g. {{\"gte\": 3}}; got {value!r}")
        return cls(tuple((str(name), term) for name, term in value.items()))

    def holds(self, value: float) -> bool:
        return self.predicate(value)

    @cached_property
    def predicate(self) -> Callable[[float], bool]:
        """``holds`` as one function (the stream evaluator calls it often)."""
        tests = [(COMPARISONS[name].python, bound) for name, bound in self.terms]
        if len(tests) == 1:
            ((compare, bound),) = tests
            return lambda value: compare(value, bound)
        return lambda value: all(compare(value, bound) for compare, bound in tests)

    def sql(self, expression: str) -> str:
        parts = [f"{expression} {COMPARISONS[name].sql} {_number_sql(bound)}" for name, bound in self.terms]
        return f"({' AND '.join(parts)})"

    def to_json(self) -> dict[str, int | float]:
        return dict(self.terms)

    def check_counts(self) -> None:
        for name, value in self.terms:
            if not isinstance(value, int) or value < 0:
                raise ConditionError(name, f"counts are whole numbers from 0; got {value!r}")

    @cached_property
    def count_change_points(self) -> tuple[int, ...]:
        """Counts next to which the test may change value, highest first (a
        count that only falls changes the answer only at one of these)."""
        points = {int(bound) + step for _, bound in self.terms for step in (0, -1)}
        return tuple(sorted((point for point in points if point >= 0), reverse=True))


AT_LEAST_ONCE = Comparison((("gte", 1),))


def _number_sql(value: int | float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


# -- shared parts -------------------------------------------------------------------


def format_duration(value: timedelta) -> str:
    """The shortest exact form in days, hours, minutes, seconds or milliseconds.

    >>> format_duration(timedelta(days=7)), format_duration(timedelta(minutes=90))
    ('7d', '90m')
    """
    milliseconds = value // timedelta(milliseconds=1)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds}ms"


def _duration(value: object, at: str, *, whole_hours: bool) -> timedelta:
    if isinstance(value, str):
        try:
            parsed = parse_duration(value)
        except ValueError as exc:
            raise ConditionError(at, str(exc)) from None
    elif isinstance(value, timedelta):
        parsed = value
    else:
        raise ConditionError(at, f"give a duration such as '24h' or '7d'; got {value!r}")
    if parsed <= timedelta(0):
        raise ConditionError(at, f"durations are positive; got {value!r}")
    if parsed > MAX_WINDOW:
        raise ConditionError(at, f"durations go up to 400 days; got {value!r}")
    if whole_hours and parsed % HOUR:
        shown = value if isinstance(value, str) else format_duration(parsed)
        raise ConditionError(at, f"windows count whole hours; got {shown!r} (use e.g. '2h' or '7d')")
    if parsed % timedelta(milliseconds=1):
        raise ConditionError(at, f"durations are whole milliseconds; got {value!r}")
    return parsed


def _optional_duration(value: object, at: str, *, whole_hours: bool) -> timedelta | None:
    return None if value is None else _duration(value, at, whole_hours=whole_hours)


def _event_name(value: object, at: str = "event") -> str:
    if not isinstance(value, str) or not value:
        raise ConditionError(at, f"give an event name; got {value!r}")
    if value in SYSTEM_EVENTS:
        raise ConditionError(
            at, f"{value!r} records a membership change and is not matched by conditions; use {{\"in_segment\": id}}"
        )
    return value


def _where(value: object, at: str = "where") -> tuple[Filter, ...]:
    """Event filters: Filter objects or ``{"field", "op", "value"}`` objects."""
    if value is None:
        return ()
    if isinstance(value, Filter | str | bytes | Mapping) or not isinstance(value, Sequence):
        raise ConditionError(at, f"give a list of filters; got {value!r}")
    filters = []
    for position, item in enumerate(value):
        place = f"{at}[{position}]"
        if isinstance(item, Mapping):
            _check_keys(item, ("field", "op", "value"), place, required=("field", "op"))
            try:
                item = Filter(item["field"], item["op"], item.get("value"))
            except SpecError as exc:
                raise ConditionError(f"{place}.{exc.field.removeprefix('Filter.')}", exc.problem) from None
        if not isinstance(item, Filter):
            raise ConditionError(place, f"give a filter {{\"field\": ..., \"op\": ..., \"value\": ...}}; got {item!r}")
        if item.is_person_filter:
            raise ConditionError(
                f"{place}.field", f"{item.field!r} is a person trait; test traits with {{\"trait\": ...}} outside the event"
            )
        filters.append(item)
    return tuple(filters)


def _filter_json(condition: Filter) -> dict[str, Any]:
    value = list(condition.value) if isinstance(condition.value, tuple) else condition.value
    body: dict[str, Any] = {"field": condition.field, "op": condition.op}
    if value is not None:
        body["value"] = value
    return body


def _check_keys(body: Mapping[str, Any], allowed: Sequence[str], at: str, required: Sequence[str] = ()) -> None:
    for key in body:
        if key not in allowed:
            raise ConditionError(f"{at}.{key}", f"unknown key {key!r}; expected {', '.join(allowed)}")
    for key in required:
        if key not in body:
            raise ConditionError(f"{at}.{key}", f"{key!r} is required")


def _one_of(more_than: object, within: object) -> None:
    if (more_than is None) == (within is None):
        raise ConditionError("", "give exactly one of more_than or within")


# -- conditions -------------------------------------------------------------------


class Condition:
    """A segment condition; see the subclasses and docs/segments.md."""

    kind: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        return {self.kind: self._body()}

    def _body(self) -> Any:
        raise NotImplementedError

    def children(self) -> tuple[Condition, ...]:
        return ()

    def walk(self) -> Iterator[Condition]:
        """This condition and every condition inside it."""
        yield self
        for child in self.children():
            yield from child.walk()


@dataclass(frozen=True)
class Performed(Condition):
    """The person did ``event`` (matching ``where``) a number of times
    (``count``, default at least once) in the last ``in_last`` (whole hours;
    none: ever)."""

    kind: ClassVar[str] = "performed"
    event: str
    where: tuple[Filter, ...] = ()
    count: Comparison = AT_LEAST_ONCE
    in_last: timedelta | None = None

    def __post_init__(self) -> None:
        _event_name(self.event)
        object.__setattr__(self, "where", _where(self.where))
        try:
            count = Comparison.parse(self.count)
            count.check_counts()
        except ConditionError as exc:
            raise exc.under("count") from None
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "in_last", _optional_duration(self.in_last, "in_last", whole_hours=True))

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"event": self.event}
        if self.where:
            body["where"] = [_filter_json(item) for item in self.where]
        if self.count != AT_LEAST_ONCE:
            body["count"] = self.count.to_json()
        if self.in_last is not None:
            body["in_last"] = format_duration(self.in_last)
        return body


@dataclass(frozen=True)
class LastPerformed(Condition):
    """The person's latest ``event`` (matching ``where``) is ``more_than`` a
    window ago (they did it, but not in the window) or ``within`` it."""

    kind: ClassVar[str] = "last_performed"
    event: str
    where: tuple[Filter, ...] = ()
    more_than: timedelta | None = None
    within: timedelta | None = None

    def __post_init__(self) -> None:
        _event_name(self.event)
        object.__setattr__(self, "where", _where(self.where))
        _one_of(self.more_than, self.within)
        for name in ("more_than", "within"):
            object.__setattr__(self, name, _optional_duration(getattr(self, name), name, whole_hours=True))

    @property
    def window(self) -> timedelta:
        window = self.more_than or self.within
        assert window is not None
        return window

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"event": self.event}
        if self.where:
            body["where"] = [_filter_json(item) for item in self.where]
        if self.more_than is not None:
            body["more_than"] = format_duration(self.more_than)
        else:
            body["within"] = format_duration(self.window)
        return body


@dataclass(frozen=True)
class _Recency(Condition):
    """The person's latest (or first) event of any kind is ``more_than`` a window ago, or ``within`` it."""

    more_than: timedelta | None = None
    within: timedelta | None = None

    def __post_init__(self) -> None:
        _one_of(self.more_than, self.within)
        for name in ("more_than", "within"):
            object.__setattr__(self, name, _optional_duration(getattr(self, name), name, whole_hours=True))

    @property
    def window(self) -> timedelta:
        window = self.more_than or self.within
        assert window is not None
        return window

    def _body(self) -> dict[str, str]:
        key = "more_than" if self.more_than is not None else "within"
        return {key: format_duration(self.window)}


@dataclass(frozen=True)
class LastSeen(_Recency):
    """The person's latest event (any kind) is ``more_than`` a window ago, or ``within`` it."""

    kind: ClassVar[str] = "last_seen"


@dataclass(frozen=True)
class FirstSeen(_Recency):
    """The person's first event is ``more_than`` a window ago, or ``within`` it."""

    kind: ClassVar[str] = "first_seen"


@dataclass(frozen=True)
class Sessions(Condition):
    """The number of the person's sessions with an event in the last ``in_last``
    (none: ever) passes ``count``."""

    kind: ClassVar[str] = "sessions"
    count: Comparison
    in_last: timedelta | None = None

    def __post_init__(self) -> None:
        try:
            count = Comparison.parse(self.count)
            count.check_counts()
        except ConditionError as exc:
            raise exc.under("count") from None
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "in_last", _optional_duration(self.in_last, "in_last", whole_hours=True))

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"count": self.count.to_json()}
        if self.in_last is not None:
            body["in_last"] = format_duration(self.in_last)
        return body


@dataclass(frozen=True)
class Step:
    """A step of a sequence: ``event`` matching ``where``, strictly after the
    previous step's event and, with ``within``, at most that long after it."""

    event: str
    where: tuple[Filter, ...] = ()
    within: timedelta | None = None

    def __post_init__(self) -> None:
        _event_name(self.event)
        object.__setattr__(self, "where", _where(self.where))
        object.__setattr__(self, "within", _optional_duration(self.within, "within", whole_hours=False))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"event": self.event}
        if self.where:
            body["where"] = [_filter_json(item) for item in self.where]
        if self.within is not None:
            body["within"] = format_duration(self.within)
        return body


@dataclass(frozen=True)
class Absence:
    """No ``event`` (matching ``where``) in the ``within`` after the last step."""

    event: str
    within: timedelta
    where: tuple[Filter, ...] = ()

    def __post_init__(self) -> None:
        _event_name(self.event)
        object.__setattr__(self, "where", _where(self.where))
        object.__setattr__(self, "within", _duration(self.within, "within", whole_hours=False))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"event": self.event, "within": format_duration(self.within)}
        if self.where:
            body["where"] = [_filter_json(item) for item in self.where]
        return body


MAX_STEPS = 10


@dataclass(frozen=True)
class EventSequence(Condition):
    """The person did ``steps`` in order (each strictly after the one before,
    within its ``within``), all in the last ``in_last`` (none: ever), and, with
    ``then_not``, did not do its event in the ``within`` after the last step,
    that time having fully passed."""

    kind: ClassVar[str] = "sequence"
    steps: tuple[Step, ...]
    then_not: Absence | None = None
    in_last: timedelta | None = None

    def __post_init__(self) -> None:
        if isinstance(self.steps, str | bytes | Mapping) or not isinstance(self.steps, Sequence):
            raise ConditionError("steps", f"give a list of steps; got {self.steps!r}")
        if not 1 <= len(self.steps) <= MAX_STEPS:
            raise ConditionError("steps", f"a sequence has 1 to {MAX_STEPS} steps; got {len(self.steps)}")
        steps = []
        for position, step in enumerate(self.steps):
            built = _build(Step, step, f"steps[{position}]")
            if position == 0 and built.within is not None:
                raise ConditionError("steps[0].within", "the first step has nothing before it; use in_last to bound it")
            steps.append(built)
        object.__setattr__(self, "steps", tuple(steps))
        if self.then_not is not None:
            object.__setattr__(self, "then_not", _build(Absence, self.then_not, "then_not"))
        object.__setattr__(self, "in_last", _optional_duration(self.in_last, "in_last", whole_hours=True))

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"steps": [step.to_json() for step in self.steps]}
        if self.then_not is not None:
            body["then_not"] = self.then_not.to_json()
        if self.in_last is not None:
            body["in_last"] = format_duration(self.in_last)
        return body


@dataclass(frozen=True)
class Trait(Condition):
    """A person trait passes a filter: ``{"field": "traits.plan", "op": "eq", "value": "pro"}``."""

    kind: ClassVar[str] = "trait"
    filter: Filter

    def __post_init__(self) -> None:
        given: object = self.filter
        if isinstance(given, Mapping):
            _check_keys(given, ("field", "op", "value"), "$", required=("field", "op"))
            try:
                given = Filter(given["field"], given["op"], given.get("value"))
            except SpecError as exc:
                raise ConditionError(exc.field.removeprefix("Filter."), exc.problem) from None
        if not isinstance(given, Filter):
            raise ConditionError("", f"give a filter on a trait; got {given!r}")
        if not given.is_person_filter:
            raise ConditionError(
                "field", f"{given.field!r} is not a trait; name traits as traits.<key> (event filters go in performed.where)"
            )
        object.__setattr__(self, "filter", given)

    def _body(self) -> dict[str, Any]:
        return _filter_json(self.filter)


@dataclass(frozen=True)
class Score(Condition):
    """A score passes ``value``: ``engagement`` (the engagement score, as live
    profiles define it) or a model's score by name (a person without one fails)."""

    kind: ClassVar[str] = "score"
    name: str
    value: Comparison

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SCORE_NAME.fullmatch(self.name):
            raise ConditionError("name", f"give a score name ('engagement' or a model's); got {self.name!r}")
        try:
            object.__setattr__(self, "value", Comparison.parse(self.value))
        except ConditionError as exc:
            raise exc.under("value") from None

    def _body(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value.to_json()}


@dataclass(frozen=True)
class InSegment(Condition):
    """The person is a member of another segment."""

    kind: ClassVar[str] = "in_segment"
    segment: str

    def __post_init__(self) -> None:
        check_segment_id(self.segment, "")

    def _body(self) -> str:
        return self.segment


def _conditions(value: object, at: str) -> tuple[Condition, ...]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence) or not value:
        raise ConditionError(at, f"give a non-empty list of conditions; got {value!r}")
    for position, item in enumerate(value):
        if not isinstance(item, Condition):
            raise ConditionError(f"{at}[{position}]", f"give a condition; got {item!r}")
    return tuple(value)


@dataclass(frozen=True)
class And(Condition):
    kind: ClassVar[str] = "and"
    conditions: tuple[Condition, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", _conditions(self.conditions, ""))

    def children(self) -> tuple[Condition, ...]:
        return self.conditions

    def _body(self) -> list[dict[str, Any]]:
        return [child.to_json() for child in self.conditions]


@dataclass(frozen=True)
class Or(Condition):
    kind: ClassVar[str] = "or"
    conditions: tuple[Condition, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", _conditions(self.conditions, ""))

    def children(self) -> tuple[Condition, ...]:
        return self.conditions

    def _body(self) -> list[dict[str, Any]]:
        return [child.to_json() for child in self.conditions]


@dataclass(frozen=True)
class Not(Condition):
    kind: ClassVar[str] = "not"
    condition: Condition

    def __post_init__(self) -> None:
        if not isinstance(self.condition, Condition):
            raise ConditionError("", f"give a condition; got {self.condition!r}")

    def children(self) -> tuple[Condition, ...]:
        return (self.condition,)

    def _body(self) -> dict[str, Any]:
        return self.condition.to_json()


_LEAVES: Mapping[str, type[Condition]] = {
    cls.kind: cls
    for cls in (Performed, LastPerformed, LastSeen, FirstSeen, Sessions, EventSequence, Trait, Score, InSegment)
}
KINDS = (*_LEAVES, "and", "or", "not")


# -- parsing ------------------------------------------------------------------------


def _build(cls: Any, value: object, at: str) -> Any:
    """An instance of a dataclass from its JSON object (or the instance itself)."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConditionError(at, f"give an object; got {value!r}")
    names = [item.name for item in fields(cls) if item.init]
    required = [item.name for item in fields(cls) if item.init and item.default is MISSING and item.default_factory is MISSING]
    _check_keys(value, names, at, required)
    try:
        return cls(**value)
    except ConditionError as exc:
        raise exc.under(at) from None



def parse_condition(data: object, at: str = "$", *, depth: int = 0) -> Condition:
    """A condition from its JSON form (already decoded)."""
    if depth > MAX_DEPTH:
        raise ConditionError(at, f"conditions nest at most {MAX_DEPTH} deep")
    if isinstance(data, Condition):
        return data
    if not isinstance(data, Mapping) or len(data) != 1:
        shown = f"keys {', '.join(map(repr, data))}" if isinstance(data, Mapping) else repr(data)
        raise ConditionError(at, f"give an object with one key, the kind of condition ({', '.join(KINDS)}); got {shown}")
    ((kind, body),) = data.items()
    place = f"{at}.{kind}"
    if kind in ("and", "or"):
        if isinstance(body, str | bytes | Mapping) or not isinstance(body, Sequence) or not body:
            raise ConditionError(place, f"give a non-empty list of conditions; got {body!r}")
        children = tuple(parse_condition(item, f"{place}[{i}]", depth=depth + 1) for i, item in enumerate(body))
        return And(children) if kind == "and" else Or(children)
    if kind == "not":
        return Not(parse_condition(body, place, depth=depth + 1))
    cls = _LEAVES.get(kind)
    if cls is None:
        raise ConditionError(place, f"unknown condition {kind!r}; use one of {', '.join(KINDS)}")
    if cls is InSegment:
        try:
            return InSegment(body)
        except ConditionError as exc:
            raise exc.under(place) from None
    if cls is Trait:
        if not isinstance(body, Mapping):
            raise ConditionError(place, f"give a filter object {{\"field\": \"traits.<key>\", \"op\": ..., \"value\": ...}}; got {body!r}")
        try:
            return Trait(body)  # type: ignore[arg-type]
        except ConditionError as exc:
            raise exc.under(place) from None
    built: Condition = _build(cls, body, place)
    return built


def check_segment_id(value: object, at: str) -> str:
    if not isinstance(value, str) or not _SEGMENT_ID.fullmatch(value):
        raise ConditionError(
            at, f"segment ids are 1-64 lowercase letters, digits, '_' or '-', starting with a letter or digit; got {value!r}"
        )
    return value


# -- segment definitions --------------------------------------------------------------


@dataclass(frozen=True)
class SegmentDefinition:
    """A named condition: ``{"id": "lapsed", "name": "Lapsed", "condition": {...}}``."""

    id: str
    condition: Condition
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        check_segment_id(self.id, "id")
        if not isinstance(self.condition, Condition):
            raise ConditionError("condition", f"give a condition; got {self.condition!r}")
        for key in ("name", "description"):
            if not isinstance(getattr(self, key), str):
                raise ConditionError(key, f"give text; got {getattr(self, key)!r}")

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id}
        if self.name:
            body["name"] = self.name
        if self.description:
            body["description"] = self.description
        body["condition"] = self.condition.to_json()
        return body

    def references(self) -> list[str]:
        return [part.segment for part in self.condition.walk() if isinstance(part, InSegment)]


def parse_definition(data: object, at: str = "$") -> SegmentDefinition:
    if not isinstance(data, Mapping):
        raise ConditionError(at, f"give a segment as an object with id, condition (and name, description); got {data!r}")
    _check_keys(data, ("id", "name", "description", "condition"), at, required=("id", "condition"))
    condition = parse_condition(data["condition"], f"{at}.condition")
    try:
        return SegmentDefinition(data["id"], condition, data.get("name", ""), data.get("description", ""))
    except ConditionError as exc:
        raise exc.under(at) from None


def parse_text(text: str, form: Literal["json", "yaml"] = "json") -> Any:
    """Decode a definition file's text: JSON, or YAML when PyYAML is installed."""
    if form == "yaml":
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise ConditionError("$", "YAML needs PyYAML (pip install pyyaml); or write the definition as JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConditionError("$", f"not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConditionError("$", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def parse_definitions(data: object) -> list[SegmentDefinition]:
    """One definition, or a list of them."""
    if isinstance(data, Mapping):
        return [parse_definition(data)]
    if isinstance(data, str | bytes) or not isinstance(data, Sequence):
        raise ConditionError("$", f"give a segment definition or a list of them; got {data!r}")
    return [parse_definition(item, f"$[{position}]") for position, item in enumerate(data)]


# -- a set of definitions -----------------------------------------------------------


class SegmentSet:
    """Definitions checked together: unique ids, known references, no cycles;
    ``order`` lists ids so that every segment comes after those it reads."""

    def __init__(self, definitions: Sequence[SegmentDefinition]) -> None:
        self.definitions: dict[str, SegmentDefinition] = {}
        for position, definition in enumerate(definitions):
            if not isinstance(definition, SegmentDefinition):
                raise ConditionError(f"$[{position}]", f"give a SegmentDefinition; got {definition!r}")
            if definition.id in self.definitions:
                raise ConditionError(f"$[{position}].id", f"segment {definition.id!r} is defined twice")
            self.definitions[definition.id] = definition
        for position, definition in enumerate(self.definitions.values()):
            for path, reference in _references(definition.condition, f"$[{position}].condition"):
                if reference not in self.definitions:
                    known = ", ".join(sorted(self.definitions)) or "none"
                    raise ConditionError(path, f"unknown segment {reference!r} (defined: {known})")
        self.order: tuple[str, ...] = self._order()

    def _order(self) -> tuple[str, ...]:
        done: dict[str, None] = {}
        visiting: list[str] = []
        position = {segment: index for index, segment in enumerate(self.definitions)}

        def visit(segment: str) -> None:
            if segment in done:
                return
            if segment in visiting:
                cycle = [*visiting[visiting.index(segment) :], segment]
                first = cycle[0]
                path = next(
                    path for path, reference in _references(self.definitions[first].condition, f"$[{position[first]}].condition")
                    if reference == cycle[1]
                )
                raise ConditionError(path, f"segments refer to each other in a cycle: {' -> '.join(cycle)}")
            visiting.append(segment)
            for reference in self.definitions[segment].references():
                visit(reference)
            visiting.pop()
            done[segment] = None

        for segment in self.definitions:
            visit(segment)
        return tuple(done)

    def __getitem__(self, segment: str) -> SegmentDefinition:
        return self.definitions[segment]

    def __iter__(self) -> Iterator[SegmentDefinition]:
        return (self.definitions[segment] for segment in self.order)

    def __len__(self) -> int:
        return len(self.definitions)

    def conditions(self) -> dict[str, Condition]:
        return {segment: definition.condition for segment, definition in self.definitions.items()}


def _references(condition: Condition, at: str) -> Iterator[tuple[str, str]]:
    """``(JSON path, segment id)`` of every in_segment inside a condition."""
    if isinstance(condition, InSegment):
        yield f"{at}.in_segment", condition.segment
    elif isinstance(condition, And | Or):
        for position, child in enumerate(condition.conditions):
            yield from _references(child, f"{at}.{condition.kind}[{position}]")
    elif isinstance(condition, Not):
        yield from _references(condition.condition, f"{at}.not")
