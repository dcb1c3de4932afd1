"""What ``footfall segments`` / ``footfall cohorts`` and their API routes do,
written once: preview a definition, list a segment's members, report
overlap, and build cohorts from a segment, a funnel step or a CSV file.

Members "now" are computed by the SQL compiler over the store: the answer the
pipeline's live memberships agree with (tests check it). The guard rails:
a segment under ``[segments] min_members`` persons gets a warning with its
preview, and every preview reports how much the new segment overlaps the
saved ones.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from footfall.analytics import funnels
from footfall.analytics.wire import spec_from_json
from footfall.segments.catalog import CatalogError, Cohort, SegmentCatalog, checked_set
from footfall.segments.language import SegmentDefinition, SegmentSet
from footfall.segments.sql import run_members
from footfall.store.database import Database
from footfall.store.schema import IDENTITIES

SAMPLE_SIZE = 10
# The members the server keeps now of a saved segment, if it keeps it.
Live = Callable[[str], "set[str] | None"]
MAX_CSV_ROWS = 1_000_000


@dataclass(frozen=True)
class Overlap:
    segment: str
    other: str
    both: int  # persons in both
    share: float  # of the segment's members, the part also in the other


@dataclass(frozen=True)
class Preview:
    segment: str
    size: int
    sample: list[str]
    at: datetime
    warnings: list[str] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "size": self.size,
            "sample": self.sample,
            "at": self.at.isoformat(),
            "warnings": self.warnings,
            "overlaps": [
                {"other": item.other, "both": item.both, "share": round(item.share, 4)} for item in self.overlaps
            ],
        }


def with_saved(catalog: SegmentCatalog, definitions: Sequence[SegmentDefinition]) -> SegmentSet:
    """The saved segments with ``definitions`` in place of (or beside) their namesakes."""
    ids = {definition.id for definition in definitions}
    others = [item for item in catalog.definitions() if item.id not in ids]
    return checked_set([*others, *definitions], ids)


def members_now(
    database: Database, catalog: SegmentCatalog, segment_id: str, *, now: datetime | None = None,
    definitions: SegmentSet | None = None,
) -> list[str]:
    """The persons in a saved segment at ``now`` (sorted ids)."""
    segments = definitions if definitions is not None else catalog.definitions()
    if segment_id not in segments.definitions:
        catalog.get(segment_id)  # raises naming what is saved
    return run_members(database, segments[segment_id].condition, now or datetime.now(UTC), segments=segments)


def preview(
    database: Database,
    catalog: SegmentCatalog,
    definition: SegmentDefinition,
    *,
    now: datetime | None = None,
    sample: int = SAMPLE_SIZE,
    alongside: Sequence[SegmentDefinition] = (),
    live: Live | None = None,
) -> Preview:
    """How big a segment is (saved or not), a sample of it, warnings, and its
    overlap with every saved segment (and those ``alongside``, being saved with it).

    ``live`` gives the members the server keeps now of a saved segment (None
    if none): overlaps are taken from memory instead of one query per segment."""
    moment = now or datetime.now(UTC)
    segments = with_saved(catalog, [definition, *(item for item in alongside if item.id != definition.id)])
    members = run_members(database, definition.condition, moment, segments=segments)
    warnings = []
    minimum = database.config.segments.min_members
    if not members:
        warnings.append("no one is in this segment now: check the event names and windows")
    elif len(members) < minimum:
        warnings.append(
            f"only {len(members)} members (fewer than {minimum}): rates measured on it will be noisy;"
            " widen the condition, or lower [segments] min_members"
        )
    overlaps = []
    mine = set(members)
    for other in segments:
        if other.id == definition.id or not mine:
            continue
        kept = live(other.id) if live is not None and other.id not in {item.id for item in alongside} else None
        theirs = kept if kept is not None else set(run_members(database, other.condition, moment, segments=segments))
        both = len(mine & theirs)
        if both:
            overlaps.append(Overlap(definition.id, other.id, both, both / len(mine)))
            if both == len(mine) == len(theirs):
                warnings.append(f"the same persons as segment {other.id!r} now")
    overlaps.sort(key=lambda item: -item.both)
    return Preview(definition.id, len(members), members[:sample], moment, warnings, overlaps)


def overlap_table(
    database: Database, catalog: SegmentCatalog, *, now: datetime | None = None, live: Live | None = None
) -> tuple[dict[str, int], list[Overlap]]:
    """Every saved segment's size, and each pair that shares persons (from
    ``live`` memberships where it has them, else by SQL)."""
    moment = now or datetime.now(UTC)
    segments = catalog.definitions()
    members = {}
    for definition in segments:
        kept = live(definition.id) if live is not None else None
        members[definition.id] = (
            kept if kept is not None else set(run_members(database, definition.condition, moment, segments=segments))
        )
    sizes = {segment: len(group) for segment, group in members.items()}
    pairs = []
    ids = list(members)
    for position, first in enumerate(ids):
        for second in ids[position + 1 :]:
            both = len(members[first] & members[second])
            if both:
                pairs.append(Overlap(first, second, both, both / len(members[first])))
    pairs.sort(key=lambda item: -item.both)
    return sizes, pairs


# -- cohorts -------------------------------------------------------------------------


def cohort_from_segment(
    database: Database, catalog: SegmentCatalog, cohort_id: str, segment_id: str, *, name: str = "", replace: bool = False
) -> Cohort:
    moment = datetime.now(UTC)
    persons = members_now(database, catalog, segment_id, now=moment)
    origin = f"segment {segment_id} at {moment:%Y-%m-%d %H:%M} UTC"
    return catalog.save_cohort(database, cohort_id, persons, origin, name=name, replace=replace)


def cohort_from_funnel(
    database: Database,
    catalog: SegmentCatalog,
    cohort_id: str,
    funnel: Any,
    *,
    step: int,
    outcome: funnels.Outcome = "converted",
    name: str = "",
    replace: bool = False,
) -> Cohort:
    """The persons who reached (or dropped at) a funnel step; ``funnel`` is a
    spec or its JSON form (as ``POST /v1/query/funnel`` takes it); ``step``
    counts from 1, as the funnel's table shows it."""
    spec = funnel if isinstance(funnel, funnels.FunnelSpec) else spec_from_json("funnel", funnel)
    if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= len(spec.steps):
        raise CatalogError(f"give a step from 1 to {len(spec.steps)}; got {step!r}", "step")
    persons = funnels.persons(database, spec, step=step - 1, outcome=outcome)
    steps = " > ".join(item.event for item in spec.steps)
    origin = f"funnel {steps}, step {step} {outcome}"
    return catalog.save_cohort(database, cohort_id, persons, origin, name=name, replace=replace)


@dataclass(frozen=True)
class CsvImport:
    cohort: Cohort
    unknown: list[str]  # ids in the file that match no stored person, user or anonymous id


def cohort_from_csv(
    database: Database,
    catalog: SegmentCatalog,
    cohort_id: str,
    text: str,
    *,
    source: str = "upload",
    name: str = "",
    replace: bool = False,
) -> CsvImport:
    """Persons listed in a CSV file: one id per row, in a column named
    ``person_id``, ``user_id`` or ``anonymous_id`` (the header says which),
    or in the only column of a file without a header (any of the three)."""
    ids, kinds = _csv_ids(text)
    persons, unknown = _resolve(database, ids, kinds)
    if not persons:
        raise CatalogError(
            f"none of the {len(ids)} ids in {source} is a stored person, user or anonymous id; check the column", "csv"
        )
    cohort = catalog.save_cohort(database, cohort_id, persons, f"csv {source}", name=name, replace=replace)
    return CsvImport(cohort, unknown)


_ID_COLUMNS = ("person_id", "user_id", "anonymous_id")


def _csv_ids(text: str) -> tuple[list[str], Sequence[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise CatalogError("the CSV file is empty; give one id per row", "csv")
    if len(rows) > MAX_CSV_ROWS:
        raise CatalogError(f"the CSV file has {len(rows):,} rows; a cohort file takes at most {MAX_CSV_ROWS:,}", "csv")
    header = [cell.strip().lower() for cell in rows[0]]
    named = [column for column in _ID_COLUMNS if column in header]
    if named:
        column = header.index(named[0])
        values = [row[column].strip() if column < len(row) else "" for row in rows[1:]]
        kinds: Sequence[str] = (named[0],)
    elif len(header) == 1:
        values, kinds = [row[0].strip() for row in rows], _ID_COLUMNS
    else:
        raise CatalogError(
            f"the CSV file has columns {', '.join(rows[0])}: name the id column person_id, user_id or anonymous_id", "csv"
        )
    return [value for value in dict.fromkeys(values) if value], kinds


def _resolve(database: Database, ids: list[str], kinds: Sequence[str]) -> tuple[list[str], list[str]]:
    """Stored persons for the ids (as person, user or anonymous ids, as ``kinds`` allows)."""
    quote = database.backend.quote
    project = quote(database.project_id)
    found: dict[str, str] = {}
    for start in range(0, len(ids), 5_000):
        chunk = ids[start : start + 5_000]
        listed = ", ".join(quote(value) for value in chunk)
        parts = []
        if "person_id" in kinds:
            parts.append(
                f"SELECT person_id AS given, person_id FROM {database.backend.final('persons')}"
                f" WHERE project_id = {project} AND person_id IN ({listed})"
            )
        for kind in ("user", "anonymous"):
            if f"{kind}_id" in kinds:
                parts.append(
                    f"SELECT value AS given, person_id FROM {database.backend.final(IDENTITIES.name)}"
                    f" WHERE project_id = {project} AND kind = {quote(kind)} AND value IN ({listed})"
                )
        for given, person in database.query(" UNION ALL ".join(parts)).rows:
            found.setdefault(str(given), str(person))
    persons = sorted(set(found.values()))
    return persons, [value for value in ids if value not in found]
