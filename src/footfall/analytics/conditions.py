"""Filter conditions: one operator table gives both the SQL and the Python predicate.

A ``Filter`` is ``field op value``. The field is an event property
(``properties.plan``, nested keys with dots: ``properties.cart.total``), a
person trait (``traits.plan``, read from ``persons.traits``), or an event
column (``country``, ``path``, ``x`` ...).

Comparisons are typed by the filter's value, the same way in SQL (both
dialects) and in Python:

- a string value compares with string properties only (``eq``, ``in``,
  ``contains``, ``regex``, and ``gt``/``lt``... in code point order);
- a number compares numerically with number properties only (so ``10 > 9``,
  and the string ``"10"`` matches no number filter);
- a boolean matches boolean properties (``eq``/``neq`` only);
- ``neq`` and ``not_in`` are the exact negations of ``eq`` and ``in``: a
  missing property, or one of another kind, matches them;
- ``is_set`` means present and not null; ``is_not_set`` is its negation.

>>> Filter("properties.price", "gt", 10).matches_value(12.5)
True
>>> Filter("properties.price", "gt", 10).matches_value("12.5")
False
>>> Filter("properties.plan", "neq", "pro").matches_value(MISSING)
True
>>> print(Filter("properties.plan", "in", ("pro", "team")).sql("duckdb"))
(coalesce(json_type(properties, '$."plan"') = 'VARCHAR', false) AND json_extract_string(properties, '$."plan"') IN ('pro', 'team'))
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import pyarrow as pa

from footfall.analytics.dialects import Dialect, dialect_named
from footfall.analytics.errors import SpecError
from footfall.events.record import EVENT_SCHEMA

Scalar = str | int | float | bool
FilterValue = Scalar | tuple[str | int | float, ...] | None
ValueKind = Literal["string", "number", "bool"]
FieldKind = Literal["event_property", "person_trait", "column"]


class _Missing:
    """A property that is absent (or JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

# Event columns a filter or breakdown may name, with the kind of their values.
# Ids and raw JSON are left out on purpose: they are not attributes to slice by.
_NOT_FILTERABLE = frozenset({"event_id", "project_id", "person_id", "properties", "timestamp", "received_at"})
COLUMNS: Mapping[str, ValueKind] = {
    field.name: ("string" if pa.types.is_string(field.type) else "number")
    for field in EVENT_SCHEMA
    if field.name not in _NOT_FILTERABLE
    and (pa.types.is_string(field.type) or pa.types.is_integer(field.type) or pa.types.is_floating(field.type))
}

_KEY = re.compile(r'[^."\\\x00-\x1f]+')


@dataclass(frozen=True)
class FieldRef:
    """Where a field's value comes from."""

    kind: FieldKind
    path: tuple[str, ...] = ()  # JSON keys, for properties and traits
    column: str = ""  # for event columns

    @property
    def column_kind(self) -> ValueKind | None:
        return COLUMNS[self.column] if self.kind == "column" else None


def parse_field(text: object, at: str) -> FieldRef:
    """``properties.<key>[.<key>...]``, ``traits.<key>...`` or an event column.

    >>> parse_field("properties.cart.total", "f")
    FieldRef(kind='event_property', path=('cart', 'total'), column='')
    >>> parse_field("propertys.plan", "f")
    Traceback (most recent call last):
    ...
    footfall.analytics.errors.SpecError: f: unknown field 'propertys.plan'; use properties.<key>, traits.<key> or an event column (browser, country, device_type, event, library, locale, os, path, referrer, title, type, url, user_agent, utm_campaign, utm_medium, utm_source, viewport_height, viewport_width, x, y, ...)
    """
    if not isinstance(text, str) or not text:
        raise SpecError(at, "give a field name: properties.<key>, traits.<key> or an event column")
    head, _, rest = text.partition(".")
    if head in ("properties", "traits") and "." in text:
        keys = tuple(rest.split("."))
        for key in keys:
            if not _KEY.fullmatch(key):
                raise SpecError(
                    at, f"bad key {key!r} in {text!r}: keys are non-empty and hold no '.', quote, backslash or control character"
                )
        return FieldRef("event_property" if head == "properties" else "person_trait", keys)
    if text in COLUMNS:
        return FieldRef("column", column=text)
    known = ", ".join(sorted(name for name in COLUMNS if name not in ("anonymous_id", "user_id", "session_id", "ip")))
    raise SpecError(
        at, f"unknown field {text!r}; use properties.<key>, traits.<key> or an event column ({known}, ...)"
    )


def value_kind(value: object) -> ValueKind | None:
    """The kind of a filter value or a stored value (None for anything else)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


# -- SQL side: an operand knows how to test a kind and read a value ----------


@dataclass(frozen=True)
class Operand:
    """A field's value in SQL, for one dialect."""

    dialect: Dialect
    field: FieldRef
    document: str = "properties"  # the JSON column, for properties and traits

    def has(self, kind: ValueKind) -> str:
        if self.field.kind == "column":
            if kind != self.field.column_kind:
                return "false"
            return f"({self.field.column} IS NOT NULL)"
        return self.dialect.render(f"json_is_{kind}", doc=self.document, path=self._path())

    def value(self, kind: ValueKind) -> str:
        if self.field.kind == "column":
            return self.field.column if kind == "string" else self.dialect.render("as_double", x=self.field.column)
        return self.dialect.render(f"json_{kind}", doc=self.document, path=self._path())

    def is_set(self) -> str:
        if self.field.kind == "column":
            return f"({self.field.column} IS NOT NULL)"
        return self.dialect.render("json_is_set", doc=self.document, path=self._path())

    def text(self) -> str:
        """The value as text (for breakdowns); NULL when missing."""
        if self.field.kind == "column":
            return self.field.column
        return self.dialect.render("json_text", doc=self.document, path=self._path())

    def _path(self) -> str:
        return self.dialect.json_path(self.field.path)


def literal(dialect: Dialect, value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value))
    return dialect.quote(value)


def _kind_of_filter_value(value: FilterValue) -> ValueKind:
    first = value[0] if isinstance(value, tuple) else value
    kind = value_kind(first)
    assert kind is not None  # checked when the filter was built
    return kind


def _compare_sql(sql_operator: str) -> Callable[[Operand, FilterValue], str]:
    def render(operand: Operand, value: FilterValue) -> str:
        kind = _kind_of_filter_value(value)
        if kind == "bool":
            test = operand.value("bool") if value else f"NOT {operand.value('bool')}"
            return f"({operand.has('bool')} AND {test})"
        assert not isinstance(value, tuple | type(None))
        return f"({operand.has(kind)} AND {operand.value(kind)} {sql_operator} {literal(operand.dialect, value)})"

    return render


def _in_sql(operand: Operand, value: FilterValue) -> str:
    assert isinstance(value, tuple)
    kind = _kind_of_filter_value(value)
    items = ", ".join(literal(operand.dialect, item) for item in value)
    return f"({operand.has(kind)} AND {operand.value(kind)} IN ({items}))"


def _not(render: Callable[[Operand, FilterValue], str]) -> Callable[[Operand, FilterValue], str]:
    return lambda operand, value: f"(NOT {render(operand, value)})"


def _string_function_sql(template: str, part: str) -> Callable[[Operand, FilterValue], str]:
    def render(operand: Operand, value: FilterValue) -> str:
        assert isinstance(value, str)
        test = operand.dialect.render(template, s=operand.value("string"), **{part: operand.dialect.quote(value)})
        return f"({operand.has('string')} AND {test})"

    return render


# -- Python side: the same predicates on a decoded value ---------------------


def _same_kind(stored: object, value: Scalar) -> bool:
    return value_kind(stored) == value_kind(value)


def _compare_python(compare: Callable[[Any, Any], bool]) -> Callable[[object, FilterValue], bool]:
    def predicate(stored: object, value: FilterValue) -> bool:
        assert not isinstance(value, tuple | type(None))
        if not _same_kind(stored, value):
            return False
        if value_kind(value) == "number":
            return compare(float(stored), float(value))  # type: ignore[arg-type]
        return compare(stored, value)

    return predicate


def _eq_python(stored: object, value: FilterValue) -> bool:
    return _compare_python(lambda left, right: left == right)(stored, value)


def _in_python(stored: object, value: FilterValue) -> bool:
    assert isinstance(value, tuple)
    return any(_eq_python(stored, item) for item in value)


def _contains_python(stored: object, value: FilterValue) -> bool:
    return isinstance(stored, str) and isinstance(value, str) and value in stored


def _regex_python(stored: object, value: FilterValue) -> bool:
    # RE2 (both engines) has ASCII \d \w \s classes; so does re with ASCII.
    return isinstance(stored, str) and isinstance(value, str) and re.search(value, stored, re.ASCII) is not None


def _is_set_python(stored: object, value: FilterValue) -> bool:
    return stored is not MISSING and stored is not None


@dataclass(frozen=True)
class Operator:
    name: str
    # Value kinds the operator accepts; "list" means a tuple of strings or numbers.
    accepts: frozenset[str]
    sql: Callable[[Operand, FilterValue], str]
    python: Callable[[object, FilterValue], bool]


def _operator(name: str, accepts: str, sql: Callable[[Operand, FilterValue], str], python: Callable[[object, FilterValue], bool]) -> Operator:
    return Operator(name, frozenset(accepts.split()), sql, python)


OPERATORS: Mapping[str, Operator] = {
    op.name: op
    for op in (
        _operator("eq", "string number bool", _compare_sql("="), _eq_python),
        _operator("neq", "string number bool", _not(_compare_sql("=")), lambda s, v: not _eq_python(s, v)),
        _operator("in", "list", _in_sql, _in_python),
        _operator("not_in", "list", _not(_in_sql), lambda s, v: not _in_python(s, v)),
        _operator("gt", "string number", _compare_sql(">"), _compare_python(lambda a, b: a > b)),
        _operator("gte", "string number", _compare_sql(">="), _compare_python(lambda a, b: a >= b)),
        _operator("lt", "string number", _compare_sql("<"), _compare_python(lambda a, b: a < b)),
        _operator("lte", "string number", _compare_sql("<="), _compare_python(lambda a, b: a <= b)),
        _operator("contains", "string", _string_function_sql("contains", "needle"), _contains_python),
        _operator("regex", "string", _string_function_sql("regex", "pattern"), _regex_python),
        _operator("is_set", "none", lambda operand, _: operand.is_set(), _is_set_python),
        _operator(
            "is_not_set", "none", lambda operand, _: f"(NOT {operand.is_set()})", lambda s, v: not _is_set_python(s, v)
        ),
    )
}

# Constructs Python's re accepts and RE2 (the engines' regex library) does not.
_NOT_RE2 = re.compile(r"\(\?<?[=!]|\(\?P=|\\[1-9]")


def check_regex(pattern: str, at: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise SpecError(at, f"bad regular expression {pattern!r}: {exc}") from None
    if _NOT_RE2.search(pattern):
        raise SpecError(at, f"regular expression {pattern!r} uses lookaround or a backreference, which RE2 does not support")


@dataclass(frozen=True)
class Filter:
    """``field op value``; see the module docs for fields and typing rules."""

    field: str
    op: str
    value: FilterValue = None

    def __post_init__(self) -> None:
        target = parse_field(self.field, "Filter.field")
        operator = OPERATORS.get(self.op) if isinstance(self.op, str) else None
        if operator is None:
            raise SpecError("Filter.op", f"unknown operator {self.op!r}; use one of {', '.join(OPERATORS)}")
        given: Any = self.value
        if isinstance(given, list):  # lists (from JSON, say) become tuples: specs stay hashable
            object.__setattr__(self, "value", tuple(given))
        kind = _check_value(self.value, operator, "Filter.value")
        column_kind = target.column_kind
        if column_kind is not None and kind is not None and kind != column_kind:
            raise SpecError("Filter.value", f"column {self.field!r} holds {column_kind}s; got a {kind} value {self.value!r}")
        if self.op == "regex":
            assert isinstance(self.value, str)
            check_regex(self.value, "Filter.value")

    @property
    def target(self) -> FieldRef:
        return parse_field(self.field, "Filter.field")

    @property
    def is_person_filter(self) -> bool:
        return self.target.kind == "person_trait"

    def sql(self, dialect: Dialect | str) -> str:
        """The condition in SQL, over ``events`` (or ``persons`` for traits)."""
        chosen = dialect_named(dialect) if isinstance(dialect, str) else dialect
        target = self.target
        document = "traits" if target.kind == "person_trait" else "properties"
        return OPERATORS[self.op].sql(Operand(chosen, target, document), self.value)

    def matches_value(self, stored: object) -> bool:
        """The condition on one decoded value (``MISSING`` when absent)."""
        return OPERATORS[self.op].python(stored, self.value)

    def matches(self, properties: Mapping[str, Any], columns: Mapping[str, Any], traits: Mapping[str, Any]) -> bool:
        """The condition on one event (decoded properties, its columns) and its person's traits."""
        target = self.target
        if target.kind == "column":
            stored = columns.get(target.column)
            return self.matches_value(MISSING if stored is None else stored)
        document = traits if target.kind == "person_trait" else properties
        return self.matches_value(lookup(document, target.path))


def lookup(document: Mapping[str, Any], path: tuple[str, ...]) -> object:
    """The value at a JSON path, or MISSING (absent, null, or under a non-object)."""
    current: object = document
    for key in path:
        if not isinstance(current, Mapping) or key not in current:
            return MISSING
        current = current[key]
    return MISSING if current is None else current


def _check_value(value: FilterValue, operator: Operator, at: str) -> ValueKind | None:
    if "none" in operator.accepts:
        if value is not None:
            raise SpecError(at, f"{operator.name} takes no value; got {value!r}")
        return None
    if "list" in operator.accepts:
        if not isinstance(value, tuple) or not value:
            raise SpecError(at, f"{operator.name} takes a non-empty list of strings or numbers; got {value!r}")
        kinds = {value_kind(item) for item in value}
        if len(kinds) != 1 or not kinds <= {"string", "number"}:
            raise SpecError(at, f"{operator.name} takes strings or numbers, not a mix; got {value!r}")
        for item in value:
            _check_finite(item, at)
        return kinds.pop()
    kind = value_kind(value)
    if kind is None or kind not in operator.accepts:
        wanted = " or ".join(sorted(operator.accepts))
        raise SpecError(at, f"{operator.name} takes a {wanted} value; got {value!r}")
    _check_finite(value, at)
    return kind


def _check_finite(value: object, at: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(at, f"numbers must be finite; got {value!r}")
