"""Saved segments and static cohorts: what ``footfall segments`` and the API
manage, and what the pipeline's segment engine keeps up to date.

Definitions live in ``segments.json`` in the data directory (small, edited
rarely, read by every process: see ``footfall.watched``). A cohort's entry
there holds its name and origin; its members are rows of the store's
``cohort_members`` table, so analyses can join them on either engine.

The catalog checks a change against every other saved segment before
writing it: ids unique, ``in_segment`` references known, no cycles, and a
segment still read by another is not deleted.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from footfall.segments.errors import ConditionError
from footfall.segments.language import SegmentDefinition, SegmentSet, parse_definition
from footfall.store.database import Database
from footfall.store.schema import COHORT_MEMBERS
from footfall.watched import WatchedFile

CATALOG_FILE = "segments.json"
_COHORT_ID = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")


class SavedSegment(msgspec.Struct, kw_only=True):
    id: str
    condition: dict[str, Any]  # the JSON form, as parse_condition reads it
    name: str = ""
    description: str = ""
    created_at: datetime
    updated_at: datetime

    def definition(self) -> SegmentDefinition:
        return parse_definition(
            {"id": self.id, "name": self.name, "description": self.description, "condition": self.condition},
            f"segment {self.id!r}",
        )


class Cohort(msgspec.Struct, kw_only=True):
    id: str
    origin: str  # where the persons came from: "segment lapsed at ...", "funnel ... step 2 dropped", "csv file.csv"
    size: int
    created_at: datetime
    name: str = ""


class _CatalogFile(msgspec.Struct):
    segments: list[SavedSegment] = msgspec.field(default_factory=list)
    cohorts: list[Cohort] = msgspec.field(default_factory=list)


class CatalogError(ConditionError):
    """A catalog change that cannot be made (unknown id, still referenced, ...)."""

    def __init__(self, problem: str, at: str = "$") -> None:
        super().__init__(at, problem)


class NotFound(CatalogError):
    """No saved segment or cohort by that id."""

    code = "not_found"


class SegmentCatalog:
    """The saved segments and cohorts of one data directory."""

    def __init__(self, data_dir: Path, *, refresh_every: float = 1.0) -> None:
        self.file = WatchedFile(Path(data_dir) / CATALOG_FILE, _CatalogFile, error=CatalogError, refresh_every=refresh_every)

    @property
    def version(self) -> int:
        """Goes up when the file changes (read it first: ``segments()``)."""
        return self.file.version

    # -- segments -------------------------------------------------------------------

    def segments(self) -> list[SavedSegment]:
        return list(self.file.read().segments)

    def definitions(self) -> SegmentSet:
        """Every saved segment, parsed and checked together."""
        return SegmentSet([saved.definition() for saved in self.segments()])

    def get(self, segment_id: str) -> SavedSegment:
        for saved in self.file.read(fresh=True).segments:
            if saved.id == segment_id:
                return saved
        known = ", ".join(saved.id for saved in self.segments()) or "none yet"
        raise NotFound(f"no segment {segment_id!r} (saved: {known}); `footfall segments list` shows them")

    def save(self, definition: SegmentDefinition, *, replace: bool = False) -> SavedSegment:
        """Add a segment, or with ``replace`` change one (keeping its creation time)."""
        return self.save_all([definition], replace=replace)[0]

    def save_all(self, definitions: Sequence[SegmentDefinition], *, replace: bool = False) -> list[SavedSegment]:
        """Save several segments as one change (they may read each other)."""
        now = datetime.now(UTC)
        saved: list[SavedSegment] = []

        def change(current: _CatalogFile) -> _CatalogFile:
            segments = list(current.segments)
            for definition in definitions:
                position = next((index for index, item in enumerate(segments) if item.id == definition.id), None)
                existing = segments[position] if position is not None else None
                if existing is not None and not replace:
                    raise CatalogError(
                        f"segment {definition.id!r} exists already; pass --replace (API: ?replace=true) to change it", "id"
                    )
                item = SavedSegment(
                    id=definition.id,
                    condition=definition.condition.to_json(),
                    name=definition.name,
                    description=definition.description,
                    created_at=existing.created_at if existing is not None else now,
                    updated_at=now,
                )
                if position is None:
                    segments.append(item)
                else:
                    segments[position] = item
                saved.append(item)
            checked_set([item.definition() for item in segments], {definition.id for definition in definitions})
            return _CatalogFile(segments, current.cohorts)

        self.file.update(change)
        return saved

    def delete(self, segment_id: str) -> None:
        def change(current: _CatalogFile) -> _CatalogFile:
            if not any(item.id == segment_id for item in current.segments):
                self.get(segment_id)  # raises naming what is saved
            readers = [
                item.id for item in current.segments
                if item.id != segment_id and segment_id in item.definition().references()
            ]
            if readers:
                raise CatalogError(
                    f"segment {segment_id!r} is read by {', '.join(map(repr, readers))} (in_segment);"
                    " change or delete those first"
                )
            return _CatalogFile([item for item in current.segments if item.id != segment_id], current.cohorts)

        self.file.update(change)

    # -- cohorts --------------------------------------------------------------------

    def cohorts(self) -> list[Cohort]:
        return list(self.file.read().cohorts)

    def cohort(self, cohort_id: str) -> Cohort:
        for cohort in self.file.read(fresh=True).cohorts:
            if cohort.id == cohort_id:
                return cohort
        known = ", ".join(cohort.id for cohort in self.cohorts()) or "none yet"
        raise NotFound(f"no cohort {cohort_id!r} (saved: {known}); `footfall cohorts list` shows them")

    def save_cohort(
        self, database: Database, cohort_id: str, persons: Sequence[str], origin: str, *, name: str = "", replace: bool = False
    ) -> Cohort:
        """Save a snapshot list of persons (ids as stored; duplicates counted once)."""
        if not isinstance(cohort_id, str) or not _COHORT_ID.fullmatch(cohort_id):
            raise CatalogError(
                f"cohort ids are 1-64 lowercase letters, digits, '_' or '-', starting with a letter or digit; got {cohort_id!r}",
                "id",
            )
        members = sorted(set(persons))
        now = datetime.now(UTC)
        cohort = Cohort(id=cohort_id, origin=origin, size=len(members), created_at=now, name=name)
        with self.file.lock:
            current = self.file.read(fresh=True)
            if any(item.id == cohort_id for item in current.cohorts) and not replace:
                raise CatalogError(f"cohort {cohort_id!r} exists already; pass --replace to overwrite it", "id")
            # Members first, replaced in one transaction: a cohort listed in
            # the file always has its rows.
            with database.writer():
                _delete_members(database, cohort_id)
                database.insert(
                    COHORT_MEMBERS.name,
                    pa.table(
                        {
                            "project_id": [database.project_id] * len(members),
                            "cohort_id": [cohort_id] * len(members),
                            "person_id": members,
                            "added_at": pa.array([now] * len(members), COHORT_MEMBERS.schema.field("added_at").type),
                        },
                        schema=COHORT_MEMBERS.schema,
                    ),
                )
            self.file.update(
                lambda current: _CatalogFile(
                    current.segments, [item for item in current.cohorts if item.id != cohort_id] + [cohort]
                )
            )
        return cohort

    def cohort_members(self, database: Database, cohort_id: str) -> list[str]:
        self.cohort(cohort_id)
        quote = database.backend.quote
        rows = database.query_arrow(
            f"SELECT DISTINCT person_id FROM {COHORT_MEMBERS.name} WHERE project_id = {quote(database.project_id)}"
            f" AND cohort_id = {quote(cohort_id)} ORDER BY person_id"
        )
        return [str(person) for person in rows["person_id"].to_pylist()]

    def delete_cohort(self, database: Database, cohort_id: str) -> None:
        with self.file.lock:
            self.cohort(cohort_id)
            self.file.update(
                lambda current: _CatalogFile(current.segments, [item for item in current.cohorts if item.id != cohort_id])
            )
            _delete_members(database, cohort_id)


def checked_set(definitions: Sequence[SegmentDefinition], changed: Collection[str] = ()) -> SegmentSet:
    """The definitions as a set; an error names the segment at fault (and the
    one being changed, when the fault shows in another)."""
    try:
        return SegmentSet(definitions)
    except ConditionError as exc:
        position = re.match(r"\$\[(\d+)\]", exc.field)
        if position is None:
            raise
        culprit = definitions[int(position.group(1))].id
        where = exc.field[position.end():].lstrip(".") or "$"
        prefix = "" if culprit in changed or not changed else f"(saving {', '.join(map(repr, sorted(changed)))}) "
        raise ConditionError(f"segment {culprit!r}: {where}", prefix + exc.problem) from None


def _delete_members(database: Database, cohort_id: str) -> None:
    quote = database.backend.quote
    with database.writer():
        database.backend.execute(
            f"DELETE FROM {COHORT_MEMBERS.name} WHERE project_id = {quote(database.project_id)}"
            f" AND cohort_id = {quote(cohort_id)}"
        )
