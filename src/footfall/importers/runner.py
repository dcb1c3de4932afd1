"""Feeding an importer's chunks to the pipeline, and reporting what happened."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from footfall.errors import ImportRowError
from footfall.importers.source import ImportChunk, strict_prefix
from footfall.pipeline.ingest import IngestReport, Pipeline

MAX_REJECTED_EXAMPLES = 1000


@dataclass
class ImportReport:
    """The outcome of one import.

    ``rejected`` keeps the first ``MAX_REJECTED_EXAMPLES`` bad rows (in source
    order per chunk); ``rejected_count`` counts all of them.
    """

    source: str
    rows_read: int = 0
    imported: int = 0
    rejected: list[ImportRowError] = field(default_factory=list)
    rejected_count: int = 0
    # Rows whose event id was already stored (a re-import) or repeated in the source.
    duplicates: int = 0
    elapsed_seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def record(self, ingested: IngestReport) -> None:
        self.imported += ingested.events
        self.duplicates += ingested.duplicates

    def add_rejected(self, errors: list[ImportRowError]) -> None:
        room = MAX_REJECTED_EXAMPLES - len(self.rejected)
        if room > 0:
            self.rejected.extend(errors[:room])
        self.rejected_count += len(errors)


def run_import(
    pipeline: Pipeline,
    batches: Iterable[ImportChunk],
    *,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Store every chunk through ``pipeline``.

    Bad rows are counted and kept as examples in the report. With ``strict``
    the first bad row stops the import: the rows before it are stored, none
    after it, and its ``ImportRowError`` is raised. (Readers created with
    ``strict=True`` stop at the same place on their own.)

    ``progress`` is called after each stored chunk with the number of source
    bytes it covered; they add up to the source's ``size_bytes``.
    """
    report = ImportReport(source=getattr(batches, "name", type(batches).__name__))
    started = time.perf_counter()
    try:
        for chunk in batches:
            if strict and chunk.rejected:
                prefix, error = strict_prefix(chunk)
                report.rows_read += chunk.rows_read
                report.add_rejected([error])
                report.record(pipeline.ingest(prefix.events))
                raise error
            report.rows_read += chunk.rows_read
            report.add_rejected(chunk.rejected)
            if chunk.events.num_rows:
                report.record(pipeline.ingest(chunk.events))
            if progress is not None:
                progress(chunk.bytes_read)
    finally:
        report.elapsed_seconds = time.perf_counter() - started
    return report
