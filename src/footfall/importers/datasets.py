"""Two real data sets as Footfall events, for tests, benchmarks and demos.

- MovieLens 100k (``recbole==1.2.1``): each rating is a ``rated`` event.
- CDNOW (``lifetimes==0.11.3``): each purchase is a ``purchase`` event.

The files ship inside those PyPI packages; install them with
``pip install --no-deps`` (the packages themselves are never imported: recbole
would pull in torch). Both sets are small, so each is read whole and stored in
time order, which keeps sessions exact across chunks.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from footfall.errors import ImportRowError
from footfall.events.record import TIMESTAMP, conform
from footfall.importers.source import (
    DEFAULT_CHUNK_ROWS,
    ImportChunk,
    ImportSource,
    SourceError,
    existing_file,
    row_event_ids,
    share_of_bytes,
)


@dataclass(frozen=True)
class PackagedFile:
    """A data file inside an installed (not imported) package."""

    package: str
    version: str
    relative_path: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        for location in locations:
            candidate = Path(location) / self.relative_path
            if candidate.is_file():
                return candidate
        where = "is not installed" if not locations else f"has no {self.relative_path}"
        raise SourceError(f"the {self.package} package {where}; install it with: {self.install}")


MOVIELENS_100K = PackagedFile("recbole", "1.2.1", "dataset_example/ml-100k/ml-100k.inter")
CDNOW_MASTER = PackagedFile("lifetimes", "0.11.3", "datasets/CDNOW_master.txt")

MOVIELENS_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]


@dataclass
class _Rows:
    """Parsed rows of a data set, in file order."""

    user_ids: list[str]
    times_ms: list[int]
    properties: list[str]
    lines: list[int]
    rejected: list[ImportRowError]


def _chunks(
    rows: _Rows, *, event: str, project_id: str, id_source: str, size_bytes: int, chunk_rows: int
) -> Iterator[ImportChunk]:
    times = np.array(rows.times_ms, dtype=np.int64)
    lines = np.array(rows.lines, dtype=np.int64)
    # Time order (ties in file order), so the pipeline sees each person's
    # events in order across chunks.
    order = np.lexsort((lines, times))
    user_ids = pa.array(rows.user_ids, pa.string())
    properties = pa.array(rows.properties, pa.string())
    total = len(order)
    for start in range(0, max(total, 1), chunk_rows):
        rows_here = order[start : start + chunk_rows]
        take = pa.array(rows_here)
        timestamp = pc.cast(pa.array(times[rows_here]), TIMESTAMP)
        count = len(rows_here)
        events = pa.table(
            {
                "event_id": row_event_ids(id_source, lines[rows_here]),
                "project_id": pa.repeat(pa.scalar(project_id), count),
                "type": pa.repeat(pa.scalar("track"), count),
                "event": pa.repeat(pa.scalar(event), count),
                "user_id": user_ids.take(take),
                "timestamp": timestamp,
                "received_at": timestamp,
                "properties": properties.take(take),
            }
        )
        first = start == 0
        yield ImportChunk(
            events=conform(events),
            lines=lines[rows_here],
            rejected=rows.rejected if first else [],
            rows_read=count + (len(rows.rejected) if first else 0),
            bytes_read=share_of_bytes(size_bytes, start + count, total) - share_of_bytes(size_bytes, start, total),
        )


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


# -- MovieLens 100k -----------------------------------------------------------


def _movielens_items(path: Path) -> dict[str, str]:
    """Per item, the JSON members its events carry: title, release year, genres."""
    if not path.is_file():
        return {}
    members: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) != 4:
            continue
        item, title, year, classes = fields
        described: dict[str, object] = {}
        if title and title.lower() not in ("unknown", "unkonwn"):
            described["title"] = title
        if year.isdigit():
            described["release_year"] = int(year)
        described["genres"] = [genre for genre in classes.split() if genre != "unknown"]
        members[item] = "," + _json(described)[1:-1]
    return members


def _movielens_rows(file: Path) -> _Rows:
    text = file.read_text(encoding="utf-8")
    all_lines = text.splitlines()
    if not all_lines or all_lines[0].split("\t") != MOVIELENS_HEADER:
        raise SourceError(
            f"{file} does not look like RecBole's ml-100k.inter: expected the header"
            f" {' '.join(MOVIELENS_HEADER)!r} (tab-separated)"
        )
    items = _movielens_items(file.with_suffix(".item"))
    item_json: dict[str, str] = {}
    rows = _Rows([], [], [], [], [])
    for number, line in enumerate(all_lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            user, item, rating_text, seconds = fields
            rating = float(rating_text)
            when = int(float(seconds) * 1000)
        except ValueError:
            rows.rejected.append(
                ImportRowError(number, "expected user_id, item_id, rating and a unix timestamp, tab-separated")
            )
            continue
        if item not in item_json:
            item_json[item] = '{"item_id":' + _json(item)
        rows.user_ids.append(f"ml-{user}")
        rows.times_ms.append(when)
        rows.properties.append(f'{item_json[item]},"rating":{rating!r}{items.get(item, "")}}}')
        rows.lines.append(number)
    return rows


def read_movielens(
    path: str | Path | None = None,
    *,
    project_id: str = "default",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ImportSource:
    """MovieLens 100k ratings as ``rated`` events.

    Each rating becomes a track event ``rated`` by user ``ml-<user_id>`` at
    its unix time, with properties ``item_id`` (text), ``rating`` (number)
    and, from the ``.item`` file beside it, ``title``, ``release_year`` and
    ``genres``. ``path`` is RecBole's ``ml-100k.inter`` or its directory; by
    default the copy inside the installed ``recbole`` package.
    """
    if path is None:
        file = MOVIELENS_100K.locate()
    else:
        given = Path(path)
        file = existing_file(given / "ml-100k.inter" if given.is_dir() else given, "MovieLens ratings file")
    rows = _movielens_rows(file)
    chunks = _chunks(
        rows,
        event="rated",
        project_id=project_id,
        id_source=f"movielens:{file.name}",
        size_bytes=file.stat().st_size,
        chunk_rows=chunk_rows,
    )
    return ImportSource(str(file), file.stat().st_size, chunks)


# -- CDNOW ----------------------------------------------------------------------


def _day_ms(day: str, cache: dict[str, int]) -> int:
    if day not in cache:
        cache[day] = int(datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC).timestamp() * 1000)
    return cache[day]


def _cdnow_rows(file: Path) -> _Rows:
    all_lines = file.read_text(encoding="ascii").splitlines()
    if not all_lines or all_lines[0].split() != ["customer_id", "date", "number_of_cds", "dollar_value"]:
        raise SourceError(
            f"{file} does not look like CDNOW_master.txt: expected the header"
            " 'customer_id date number_of_cds dollar_value'"
        )
    days: dict[str, int] = {}
    rows = _Rows([], [], [], [], [])
    for number, line in enumerate(all_lines[1:], start=2):
        fields: Sequence[str] = line.split()
        if not fields:
            continue
        try:
            customer, day, cds, dollars = fields
            user_id = f"cdnow-{int(customer)}"
            when = _day_ms(day, days)
            quantity = int(cds)
            revenue = float(dollars)
        except ValueError:
            rows.rejected.append(
                ImportRowError(number, "expected customer_id, date (YYYYMMDD), number_of_cds and dollar_value")
            )
            continue
        rows.user_ids.append(user_id)
        rows.times_ms.append(when)
        rows.properties.append(f'{{"revenue":{revenue!r},"quantity":{quantity}}}')
        rows.lines.append(number)
    return rows


def read_cdnow(
    path: str | Path | None = None,
    *,
    project_id: str = "default",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ImportSource:
    """CDNOW purchases as ``purchase`` events.

    Each row becomes a track event ``purchase`` by user ``cdnow-<customer_id>``
    (the id without leading zeros, as ``lifetimes`` reads it) at 00:00 UTC of
    its date, with properties ``revenue`` (dollars) and ``quantity`` (CDs).
    A customer's purchases on one day stay separate events: ids come from the
    line number. ``path`` defaults to the copy inside ``lifetimes``.
    """
    file = CDNOW_MASTER.locate() if path is None else existing_file(path, "CDNOW_master.txt")
    rows = _cdnow_rows(file)
    chunks = _chunks(
        rows,
        event="purchase",
        project_id=project_id,
        id_source=f"cdnow:{file.name}",
        size_bytes=file.stat().st_size,
        chunk_rows=chunk_rows,
    )
    return ImportSource(str(file), file.stat().st_size, chunks)
