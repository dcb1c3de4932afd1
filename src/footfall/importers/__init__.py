"""Importers: files and data sets in, chunks of events out, stored by the pipeline.

Every reader returns an ``ImportSource`` (an iterator of ``ImportChunk``:
events in ``EVENT_SCHEMA``, the rows it rejected, rows and bytes read) and
checks its arguments before reading a row. ``run_import`` stores the chunks::

    pipeline = Pipeline(Database.open(data_dir))
    report = run_import(pipeline, read_csv("orders.csv", "event=action,user_id=uid,timestamp=ts"))
"""

from footfall.importers.datasets import CDNOW_MASTER, MOVIELENS_100K, read_cdnow, read_movielens
from footfall.importers.jsonl import read_jsonl
from footfall.importers.mapping import ColumnMapping, column_mapping, parse_mapping
from footfall.importers.runner import MAX_REJECTED_EXAMPLES, ImportReport, run_import
from footfall.importers.source import (
    DEFAULT_CHUNK_ROWS,
    ImportChunk,
    ImportSource,
    MappingError,
    SourceError,
)
from footfall.importers.tabular import read_csv, read_parquet

__all__ = [
    "CDNOW_MASTER",
    "DEFAULT_CHUNK_ROWS",
    "MAX_REJECTED_EXAMPLES",
    "MOVIELENS_100K",
    "ColumnMapping",
    "ImportChunk",
    "ImportReport",
    "ImportSource",
    "MappingError",
    "SourceError",
    "column_mapping",
    "parse_mapping",
    "read_cdnow",
    "read_csv",
    "read_jsonl",
    "read_movielens",
    "read_parquet",
    "run_import",
]
