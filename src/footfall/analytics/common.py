"""Options every analysis shares: date range, time zone, filters, breakdown.

Date ranges are half open, ``[start, end)``. A date means midnight in the
spec's time zone; a naive datetime is read in that zone; an aware datetime is
an instant. All of it resolves to UTC instants before any SQL is written:

>>> DateRange.parse("2024-03-31", "2024-04-01").resolve("Europe/Berlin")
(datetime.datetime(2024, 3, 30, 23, 0, tzinfo=datetime.timezone.utc), datetime.datetime(2024, 3, 31, 22, 0, tzinfo=datetime.timezone.utc))

(that day had 23 hours in Berlin: summer time began at 02:00.)
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from footfall.analytics.conditions import FieldRef, Filter, Operand, parse_field
from footfall.analytics.dialects import Dialect, dialect_named
from footfall.analytics.errors import SpecError
from footfall.events.record import SYSTEM_EVENTS
from footfall.store.database import Database
from footfall.store.dialects import final_table
from footfall.store.schema import PAGE_EVENTS

Moment = date | datetime

_T = TypeVar("_T")


def zone(name: object, at: str = "time_zone") -> ZoneInfo:
    """The IANA time zone of that name, or a SpecError naming the field."""
    if not isinstance(name, str) or not name:
        raise SpecError(at, "give an IANA time zone name such as 'UTC' or 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(at, f"unknown time zone {name!r}; use an IANA name such as 'UTC' or 'America/New_York'") from None


def _instant(value: Moment, tz: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        local = value if value.tzinfo is not None else value.replace(tzinfo=tz)
    else:
        local = datetime.combine(value, time(0), tzinfo=tz)
    return local.astimezone(UTC)


def _parse_moment(text: str, at: str) -> Moment:
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(at, f"bad date {text!r}: use ISO 8601, e.g. '2024-03-01' or '2024-03-01T12:30:00+01:00'") from None


@dataclass(frozen=True)
class DateRange:
    """From ``start`` (inclusive) to ``end`` (exclusive); dates or datetimes."""

    start: Moment
    end: Moment

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            if not isinstance(getattr(self, name), date):
                raise SpecError(f"DateRange.{name}", f"give a date or datetime; got {getattr(self, name)!r}")
        if self.resolve("UTC")[1] <= self.resolve("UTC")[0] and _same_kind(self.start, self.end):
            raise SpecError("DateRange.end", _EMPTY_RANGE)

    @classmethod
    def parse(cls, start: str, end: str) -> DateRange:
        """From ISO 8601 text: ``DateRange.parse("2024-03-01", "2024-04-01")``."""
        return cls(_parse_moment(start, "DateRange.start"), _parse_moment(end, "DateRange.end"))

    def resolve(self, time_zone: str) -> tuple[datetime, datetime]:
        """The range as UTC instants, dates and naive times read in ``time_zone``."""
        tz = zone(time_zone)
        return _instant(self.start, tz), _instant(self.end, tz)


_EMPTY_RANGE = "the range is empty: end must come after start (end is exclusive: for one day use the next day as end)"


def _same_kind(first: Moment, second: Moment) -> bool:
    """Both aware, or both local: then their order does not depend on the zone."""

    def local(value: Moment) -> bool:
        return not isinstance(value, datetime) or value.tzinfo is None

    return local(first) == local(second)


def check_range(date_range: DateRange | None, time_zone: str) -> tuple[datetime, datetime] | None:
    if date_range is None:
        return None
    if not isinstance(date_range, DateRange):
        raise SpecError("date_range", f"give a DateRange; got {date_range!r}")
    start, end = date_range.resolve(time_zone)
    if end <= start:
        raise SpecError("date_range", _EMPTY_RANGE)
    return start, end


def as_tuple(value: Sequence[_T] | None, at: str, item_type: type[_T]) -> tuple[_T, ...]:
    """A spec's sequence field as a tuple (lists are accepted), items type-checked."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise SpecError(at, f"give a list of {item_type.__name__}; got {value!r}")
    for position, item in enumerate(value):
        if not isinstance(item, item_type):
            raise SpecError(f"{at}[{position}]", f"give a {item_type.__name__}; got {item!r}")
    return tuple(value)


def check_event_filters(filters: tuple[Filter, ...], at: str) -> None:
    """Filters on single events (steps, exclusions) cannot name person traits."""
    for position, condition in enumerate(filters):
        if condition.is_person_filter:
            raise SpecError(
                f"{at}[{position}].field",
                f"{condition.field!r} is a person trait; put person filters in the spec's filters",
            )


def check_breakdown(field: str | None, at: str = "breakdown") -> FieldRef | None:
    """A breakdown is an event property or a string event column."""
    if field is None:
        return None
    target = parse_field(field, at)
    if target.kind == "person_trait":
        raise SpecError(at, "breakdowns by person traits are not supported yet; use an event property or column")
    if target.kind == "column" and target.column_kind != "string":
        raise SpecError(at, f"column {field!r} holds numbers; break down by a text column or an event property")
    return target


def events_where(
    dialect: Dialect,
    project_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    filters: Sequence[Filter] = (),
    events: Sequence[str] | None = None,
    named: Sequence[str] = (),
) -> str:
    """The WHERE clause of a scan of ``events``: project, time bounds (inclusive),
    the spec's event filters, and its person filters (against ``persons.traits``).

    A scan of every event (``events`` None) leaves out the membership changes
    the server records (``SYSTEM_EVENTS``): they are not something the person
    did, so they must not make anyone active or open a session. Named, they
    are read like any event (a funnel may start at ``segment_entered``):
    ``named`` lists the events a caller that selects its own events will ask for."""
    clauses = [f"project_id = {dialect.quote(project_id)}"]
    if since is not None:
        clauses.append(f"timestamp >= {dialect.timestamp(since)}")
    if until is not None:
        clauses.append(f"timestamp <= {dialect.timestamp(until)}")
    if events is not None:
        names = ", ".join(dialect.quote(name) for name in sorted(set(events)))
        clauses.append(dialect.render("one_of", x="event", values=names))
    else:
        left_out = [name for name in SYSTEM_EVENTS if name not in named]
        if left_out:
            system = ", ".join(dialect.quote(name) for name in left_out)
            clauses.append(f"NOT ({dialect.render('one_of', x='event', values=system)})")
    clauses.extend(condition.sql(dialect) for condition in filters if not condition.is_person_filter)
    person_filters = [condition.sql(dialect) for condition in filters if condition.is_person_filter]
    if person_filters:
        persons = final_table(dialect.name, "persons")
        clauses.append(
            f"person_id IN (SELECT person_id FROM {persons} WHERE project_id = {dialect.quote(project_id)}"
            f" AND {' AND '.join(person_filters)})"
        )
    return "\n  AND ".join(clauses)


def page_events_source(dialect: Dialect, filters: Sequence[Filter]) -> str:
    """The table a scan of page events (``schema.PAGE_EVENT_NAMES`` that
    have a path) reads. On ClickHouse, its copy of them ordered by page
    (``footfall.store.schema.PAGE_EVENTS``), where one page's events lie
    together and the other events are not there to skip, unless a filter
    names a column that copy leaves out; on DuckDB, the events."""
    if dialect.name != "clickhouse":
        return "events"
    kept = set(PAGE_EVENTS.schema.names)
    if any(f.target.kind == "column" and f.target.column not in kept for f in filters):
        return "events"
    return PAGE_EVENTS.name


def may_hold_text(dialect: Dialect, text: str) -> str:
    """A cheap test of the raw ``properties`` text, true of every event whose
    JSON holds ``text`` as a key or string value: the text is there as it
    is, or an escape (a backslash) could spell it. A filter to put before a
    JSON function, which parses the whole document."""
    found, escaped = (dialect.render("contains", s="properties", needle=dialect.quote(needle)) for needle in (text, "\\"))
    return dialect.render("either", a=found, b=escaped)


def breakdown_sql(dialect: Dialect, target: FieldRef | None) -> str:
    return "NULL" if target is None else Operand(dialect, target).text()


def epoch_ms(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def check_names(
    database: Database, *, events: Sequence[tuple[str, str]] = (), filters: Sequence[tuple[str, Filter]] = (),
    properties: Sequence[tuple[str, str]] = (),
) -> None:
    """A SpecError for an event name, or an event property (in a filter, a
    breakdown or a measure), that no stored event of the project has: most
    likely a typo. ``events`` and ``properties`` are (spec field, name or
    ``properties.KEY``) pairs, ``filters`` (spec field, filter) pairs. A project
    without events yet is not checked; ``is_not_set`` filters may name anything."""
    named = [*properties]
    named += [(f"{field}.field", condition.field) for field, condition in filters if condition.op != "is_not_set"]
    targets = [(field, name, target) for field, name in named if (target := parse_field(name, field)).kind == "event_property"]
    if not events and not targets:
        return  # nothing to look up
    dialect = dialect_named(database.backend.dialect)
    project = f"project_id = {dialect.quote(database.project_id)}"
    known = {str(row[0]) for row in database.query(f"SELECT DISTINCT event FROM events WHERE {project}").rows}
    if not known:
        return
    for field, name in events:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise SpecError(field, f"no event named {name!r} in project {database.project_id!r}{hint}")
    for field, name, target in targets:
        present = dialect.render("json_is_set", doc="properties", path=dialect.json_path(target.path))
        if not database.query(f"SELECT 1 FROM events WHERE {project} AND {present} LIMIT 1").rows:
            raise SpecError(field, f"no stored event has the property {name!r}; check the name (keys are case-sensitive)")
