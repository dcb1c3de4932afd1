"""``footfall ...``: a thin layer that parses options, calls one service, prints.

Errors Footfall raises on purpose print as one line and exit with status 2.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from footfall import __version__
from footfall.analytics.cli import funnel_options as _funnel_options
from footfall.config import CONFIG_FILE, init_data_dir, resolve_data_dir
from footfall.errors import FootfallError
from footfall.store.backend import QueryResult
from footfall.store.database import Database, Summary

if TYPE_CHECKING:
    from footfall.importers import ImportSource

console = Console()
errors = Console(stderr=True)

DEMO_DIR = "footfall-demo"
DEMO_MARKER = ".footfall-demo"


class Context:
    def __init__(self, data_dir: str | None) -> None:
        self.data_dir_option = data_dir

    @property
    def data_dir(self) -> Path:
        return resolve_data_dir(self.data_dir_option)


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Data directory (default: $FOOTFALL_DATA_DIR, else ./footfall-data).",
)
@click.version_option(__version__, prog_name="footfall")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None) -> None:
    """Footfall: behavioral analytics and personalization.

    Start with `footfall demo`, which simulates a month of shop traffic into a
    fresh store and summarises it.
    """
    ctx.obj = Context(data_dir)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return str(value)


def print_result(result: QueryResult, as_json: bool) -> None:
    if as_json:
        for row in result.rows:
            click.echo(json.dumps(dict(zip(result.columns, row, strict=True)), default=_cell, ensure_ascii=False))
        return
    table = Table(*result.columns, header_style="bold")
    for row in result.rows:
        table.add_row(*(_cell(value) for value in row))
    console.print(table)
    console.print(f"[dim]{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}[/dim]")


def print_summary(summary: Summary, data_dir: Path) -> None:
    overview = Table(show_header=False, box=None)
    overview.add_row("data directory", str(data_dir))
    overview.add_row("events", f"{summary.events:,}")
    overview.add_row("persons", f"{summary.persons:,}")
    overview.add_row("sessions", f"{summary.sessions:,}")
    if summary.first_event and summary.last_event:
        overview.add_row("time span", f"{summary.first_event:%Y-%m-%d %H:%M} → {summary.last_event:%Y-%m-%d %H:%M} UTC")
    overview.add_row("dead letters", f"{summary.dead_letters:,}")
    console.print(overview)
    if summary.top_events:
        top = Table("event", "count", "share", title="top events", title_justify="left", header_style="bold")
        for name, count in summary.top_events:
            top.add_row(name, f"{count:,}", f"{count / summary.events:.1%}")
        console.print(top)


# -- demo and simulate -------------------------------------------------------------


def _prepare_demo_dir(path: Path) -> None:
    if path.exists():
        if not (path / DEMO_MARKER).exists():
            raise FootfallError(
                f"{path} exists and is not a demo directory; choose another with --data-dir"
                " (the demo recreates its directory from scratch)"
            )
        shutil.rmtree(path)
    init_data_dir(path)
    (path / DEMO_MARKER).write_text("created by `footfall demo`; safe to delete\n")


def _load_simulation(database: Database, users: int, days: int, seed: int, truth_dir: Path | None) -> tuple[int, int, float]:
    """Simulate into the store; returns events stored, events already there, seconds."""
    from footfall.pipeline import Pipeline
    from footfall.simulate import Simulation, SimulationSpec

    simulation = Simulation(SimulationSpec(users=users, days=days, seed=seed, project_id=database.project_id))
    pipeline = Pipeline(database)
    started = time.perf_counter()
    loaded = duplicates = 0
    with _progress() as progress:
        task = progress.add_task("simulating and loading events", total=None)
        for batch in simulation.batches():
            report = pipeline.ingest(batch)
            loaded += report.events
            duplicates += report.duplicates
            progress.update(task, completed=loaded + duplicates)
    if truth_dir is not None:
        simulation.ground_truth().write(truth_dir)
    return loaded, duplicates, time.perf_counter() - started


def _demo_segments(database: Database, path: Path) -> None:
    """Save the ready-made segments (the server keeps them live) and show their
    sizes at the end of the simulated traffic."""
    from footfall.segments import ready_made, run_members
    from footfall.segments.catalog import SegmentCatalog

    catalog = SegmentCatalog(path)
    catalog.save_all(ready_made())
    [[end]] = database.query("SELECT max(timestamp) FROM events").rows
    segments = catalog.definitions()
    table = Table("segment", "members", "condition", title=f"Segments at the end of the traffic ({end:%Y-%m-%d %H:%M} UTC)",
                  header_style="bold")
    for definition in segments:
        size = len(run_members(database, definition.condition, end, segments=segments))
        table.add_row(definition.id, f"{size:,}", definition.description)
    console.print(table)


@cli.command()
@click.option("--users", default=3000, show_default=True, type=click.IntRange(1), help="Simulated users.")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1), help="Days of traffic.")
@click.option("--seed", default=7, show_default=True, type=click.IntRange(0), help="Random seed (same seed, same world).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port of the demo shop on 127.0.0.1.")
@click.option("--no-serve", is_flag=True, help="Stop after the summary instead of serving the demo shop.")
@click.pass_obj
def demo(obj: Context, users: int, days: int, seed: int, port: int, no_serve: bool) -> None:
    """Simulate a month of shop traffic into a fresh store, summarise it, then
    serve a demo shop instrumented with footfall.js at http://127.0.0.1:8000/.

    Uses ./footfall-demo unless --data-dir is given, and recreates it each run.
    """
    path = resolve_data_dir(obj.data_dir_option or DEMO_DIR)
    if not no_serve:
        _check_port("127.0.0.1", port)  # before minutes of work, not after
    _prepare_demo_dir(path)
    with Database.open(path) as database:
        loaded, _, seconds = _load_simulation(database, users, days, seed, path / "ground_truth")
        console.print(f"[bold]Footfall demo[/bold]: {users:,} users over {days} days, {loaded:,} events in {seconds:.1f} s")
        print_summary(database.summary(), path)
        _demo_segments(database, path)
    console.print(
        f"\nGround truth (persona, churn, next action per user) is in {path / 'ground_truth'}.\n"
        f'Explore: footfall --data-dir {path} sql "SELECT event, count(*) FROM events GROUP BY ALL ORDER BY 2 DESC"'
    )
    if no_serve:
        return
    url = f"http://127.0.0.1:{port}/"
    console.print(
        f"\n[bold]Demo shop[/bold] at {url} — browse it and watch your own events arrive in its side panel;"
        f" they land in the same store (footfall --data-dir {path} sql ... from another terminal).\nCtrl-C to stop.",
        highlight=False,
    )
    _run_server(path, "127.0.0.1", port, "warning", demo_site=True)


@cli.command()
@click.option("--users", default=2000, show_default=True, type=click.IntRange(1), help="Simulated users (about 57 events each over 30 days).")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1), help="Days of traffic.")
@click.option("--seed", default=7, show_default=True, type=click.IntRange(0), help="Random seed (same seed, same world; loading it twice adds nothing).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the events to this Parquet file instead of loading them.")
@click.option("--truth", type=click.Path(file_okay=False, path_type=Path), help="Also write ground truth (Parquet) to this directory.")
@click.pass_obj
def simulate(obj: Context, users: int, days: int, seed: int, out: Path | None, truth: Path | None) -> None:
    """Generate synthetic shop traffic with known ground truth.

    Loads it into the data directory's store, or writes Parquet with --out.
    """
    if out is None:
        init_data_dir(obj.data_dir)
        with Database.open(obj.data_dir) as database:
            loaded, duplicates, seconds = _load_simulation(database, users, days, seed, truth)
        console.print(f"loaded {loaded:,} events in {seconds:.1f} s ({loaded / max(seconds, 1e-9):,.0f} events/s)")
        if duplicates:
            console.print(f"{duplicates:,} events of this seed were stored already and were skipped; use another --seed for new traffic")
        return

    import pyarrow.parquet as pq

    from footfall.events.record import EVENT_SCHEMA
    from footfall.simulate import Simulation, SimulationSpec

    simulation = Simulation(SimulationSpec(users=users, days=days, seed=seed))
    written = 0
    with pq.ParquetWriter(out, EVENT_SCHEMA) as writer:
        for batch in simulation.batches():
            writer.write_table(batch)
            written += batch.num_rows
    if truth is not None:
        simulation.ground_truth().write(truth)
    console.print(f"wrote {written:,} events to {out}")


# -- importing ---------------------------------------------------------------------


@cli.group(name="import")
def import_group() -> None:
    """Import events: Segment JSON lines, CSV or Parquet with a column mapping,
    and the MovieLens 100k and CDNOW data sets (see docs/importers.md)."""


strict_option = click.option(
    "--strict", is_flag=True, help="Stop at the first bad row (rows before it are kept) instead of skipping it."
)
SHOWN_REJECTIONS = 10


def _run_import(obj: Context, open_source: Callable[[str], ImportSource], strict: bool) -> None:
    from footfall.importers import run_import
    from footfall.pipeline import Pipeline

    init_data_dir(obj.data_dir)
    with Database.open(obj.data_dir) as database:
        source = open_source(database.project_id)
        with _progress() as progress:
            task = progress.add_task(f"importing {Path(source.name).name}", total=source.size_bytes)
            report = run_import(
                Pipeline(database), source, strict=strict, progress=lambda done: progress.advance(task, done)
            )
    console.print(
        f"imported {report.imported:,} events from {report.rows_read:,} rows of {source.name}"
        f" in {report.elapsed_seconds:.1f} s ({report.rows_per_second:,.0f} rows/s)",
        soft_wrap=True,
    )
    if report.duplicates:
        console.print(
            f"skipped {report.duplicates:,} rows whose event id is already stored (an earlier import of the same"
            " file, or repeated ids); a different file with the same name needs its own name or an event_id column",
            soft_wrap=True,
        )
    if report.rejected_count:
        errors.print(f"[yellow]{report.rejected_count:,} rows skipped[/yellow] (--strict stops at the first):")
        for rejection in report.rejected[:SHOWN_REJECTIONS]:
            errors.print(f"  {rejection}", highlight=False)
        if report.rejected_count > SHOWN_REJECTIONS:
            errors.print(f"  ... and {report.rejected_count - SHOWN_REJECTIONS:,} more", highlight=False)


@import_group.command(name="jsonl")
@click.argument("file", type=click.Path(dir_okay=False))
@strict_option
@click.pass_obj
def import_jsonl(obj: Context, file: str, strict: bool) -> None:
    """Segment-format messages, one JSON object per line (.jsonl or .jsonl.gz)."""
    from footfall.importers import read_jsonl

    _run_import(obj, lambda project: read_jsonl(file, project_id=project, strict=strict), strict)


def _tabular_options(command: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option(
            "--map", "mapping", required=True,
            help="Footfall field=source column pairs, e.g. event=action,user_id=uid,timestamp=ts,properties.revenue=amount",
        ),
        click.option("--event", "event_name", help="Event name for every row, when no column holds it."),
        click.option("--timestamp-unit", type=click.Choice(["s", "ms", "us", "ns"]), help="Unit of numeric timestamps (default: from their size)."),
        click.option("--timestamp-format", help="strptime format of text timestamps, e.g. '%d/%m/%Y %H:%M'."),
        strict_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@import_group.command(name="csv")
@click.argument("file", type=click.Path(dir_okay=False))
@_tabular_options
@click.option("--delimiter", default=",", show_default=True)
@click.pass_obj
def import_csv(
    obj: Context, file: str, mapping: str, event_name: str | None, timestamp_unit: str | None,
    timestamp_format: str | None, strict: bool, delimiter: str,
) -> None:
    """A CSV file with a header line, one event per row."""
    from footfall.importers import read_csv

    _run_import(
        obj,
        lambda project: read_csv(
            file, mapping, event_name=event_name, timestamp_unit=timestamp_unit, timestamp_format=timestamp_format,
            delimiter=delimiter, project_id=project, strict=strict,
        ),
        strict,
    )


@import_group.command(name="parquet")
@click.argument("file", type=click.Path(dir_okay=False))
@_tabular_options
@click.pass_obj
def import_parquet(
    obj: Context, file: str, mapping: str, event_name: str | None, timestamp_unit: str | None,
    timestamp_format: str | None, strict: bool,
) -> None:
    """A Parquet file, one event per row."""
    from footfall.importers import read_parquet

    _run_import(
        obj,
        lambda project: read_parquet(
            file, mapping, event_name=event_name, timestamp_unit=timestamp_unit, timestamp_format=timestamp_format,
            project_id=project, strict=strict,
        ),
        strict,
    )


@import_group.command(name="movielens")
@click.argument("path", required=False, type=click.Path())
@click.pass_obj
def import_movielens(obj: Context, path: str | None) -> None:
    """MovieLens 100k ratings as `rated` events (default: the copy in the recbole package)."""
    from footfall.importers import read_movielens

    _run_import(obj, lambda project: read_movielens(path, project_id=project), strict=False)


@import_group.command(name="cdnow")
@click.argument("path", required=False, type=click.Path())
@click.pass_obj
def import_cdnow(obj: Context, path: str | None) -> None:
    """CDNOW purchases as `purchase` events with revenue (default: the copy in the lifetimes package)."""
    from footfall.importers import read_cdnow

    _run_import(obj, lambda project: read_cdnow(path, project_id=project), strict=False)


# -- reading -----------------------------------------------------------------------


@cli.command()
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
@click.pass_obj
def sql(obj: Context, query: str, as_json: bool) -> None:
    """Run a read-only SQL query on the store (tables: events, persons, identities, ...).

    Works while `footfall serve` holds the store: the query then goes through it.
    """
    from footfall.api.local import open_reader

    with open_reader(obj.data_dir) as database:
        print_result(database.read_only_query(query), as_json)


@cli.group()
def query() -> None:
    """Analyses: funnels, trends, retention, paths, heatmaps ... (see docs/analytics.md). Add --explain for the SQL, --json for JSON."""


@query.command(name="funnel")
@_funnel_options
@click.pass_obj
def query_funnel(obj: Context, /, spec_file: Path | None, as_json: bool, explain: bool, **flags: Any) -> None:
    """How many persons go through a sequence of events, and where they drop.

    e.g. footfall query funnel --steps view_product,add_to_cart,purchase --window 1h
    """
    from footfall import analytics
    from footfall.analytics.cli import funnel_document, print_funnel, read_spec_file
    from footfall.analytics.errors import SpecError
    from footfall.analytics.wire import spec_from_json, to_json
    from footfall.api.local import open_reader

    if spec_file is not None:
        if any(value for value in flags.values()):
            raise SpecError("--spec", "give either --spec FILE or the funnel flags, not both")
        document = read_spec_file(spec_file)
    else:
        document = funnel_document(**flags)
    spec = spec_from_json("funnel", document)
    with open_reader(obj.data_dir) as database:
        if explain:
            click.echo(analytics.compile(spec, database.backend.dialect, project_id=database.project_id))
            return
        result = analytics.run(database, spec)
    if as_json:
        click.echo(json.dumps(to_json(result), ensure_ascii=False))
    else:
        print_funnel(result, console)


@query.command(name="engagement")
@click.option("--as-of", metavar="TIME", help="The moment scored, ISO 8601 with a zone (default: now).")
@click.option("--window", help="Events counted, e.g. 30d (default: the project's [engagement] window).")
@click.option("--half-life", help="Recency half-life, e.g. 14d, or 'none' (default: the project's).")
@click.option("--where", multiple=True, metavar="FIELD:OP[:VALUE]", help="Keep events (or persons, with traits.KEY); repeatable.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0), help="Top persons listed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--explain", is_flag=True, help="Print the SQL instead of running it.")
@click.pass_obj
def query_engagement(
    obj: Context, as_of: str | None, window: str | None, half_life: str | None, where: tuple[str, ...], limit: int,
    as_json: bool, explain: bool,
) -> None:
    """Engagement scores per person (weights in footfall.toml) and high / medium / low bands."""
    from footfall.analytics import engagement
    from footfall.analytics.cli import parse_where, print_engagement
    from footfall.analytics.wire import spec_from_json, to_json
    from footfall.api.local import open_reader

    document: dict[str, Any] = {"limit": limit, "filters": [parse_where(text, f"--where {text!r}") for text in where]}
    for key, value in (("as_of", as_of), ("window", window)):
        if value is not None:
            document[key] = value
    if half_life is not None:
        document["half_life"] = None if half_life.lower() == "none" else half_life
    spec = spec_from_json("engagement", document)
    with open_reader(obj.data_dir) as database:
        resolved = spec.resolved(database.config.engagement)
        if explain:
            click.echo(engagement.compile(resolved, database.backend.dialect, project_id=database.project_id))
            return
        result = engagement.run(database, spec)
    if as_json:
        click.echo(json.dumps(to_json(result), ensure_ascii=False))
    else:
        print_engagement(result, console)


@query.command(name="kpis")
@click.option("--from", "start", required=True, metavar="DATE", help="First day, ISO 8601.")
@click.option("--to", "end", required=True, metavar="DATE", help="End of the range, exclusive.")
@click.option("--tz", "time_zone", metavar="ZONE", help="Time zone of the dates and cohort months (default UTC).")
@click.option("--conversion", metavar="EVENT", help="The conversion event, e.g. purchase.")
@click.option("--feature", "features", multiple=True, metavar="EVENT", help="A feature's event, for its adoption rate; repeatable.")
@click.option("--where", multiple=True, metavar="FIELD:OP[:VALUE]", help="Keep events (or persons, with traits.KEY); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--explain", is_flag=True, help="Print the SQL instead of running it.")
@click.pass_obj
def query_kpis(
    obj: Context, start: str, end: str, time_zone: str | None, conversion: str | None, features: tuple[str, ...],
    where: tuple[str, ...], as_json: bool, explain: bool,
) -> None:
    """Sessions, duration, bounce and engagement rates, pages per session,
    conversion and feature adoption rates, and revenue per person by cohort."""
    from footfall import analytics
    from footfall.analytics.cli import parse_where, print_kpis
    from footfall.analytics.wire import spec_from_json, to_json
    from footfall.api.local import open_reader

    document: dict[str, Any] = {"from": start, "to": end, "features": list(features),
                                "filters": [parse_where(text, f"--where {text!r}") for text in where]}
    if time_zone is not None:
        document["time_zone"] = time_zone
    if conversion is not None:
        document["conversion_event"] = conversion
    spec = spec_from_json("kpis", document)
    with open_reader(obj.data_dir) as database:
        if explain:
            click.echo(analytics.compile(spec, database.backend.dialect, project_id=database.project_id))
            return
        result = analytics.run(database, spec)
    if as_json:
        click.echo(json.dumps(to_json(result), ensure_ascii=False))
    else:
        print_kpis(result, console)


@query.command(name="trend")
@click.option("--from", "start", required=True, metavar="DATE", help="First day, ISO 8601.")
@click.option("--to", "end", required=True, metavar="DATE", help="End of the range, exclusive.")
@click.option("--event", help="The event (default: every event).")
@click.option("--measure", default="count", show_default=True,
              type=click.Choice(["count", "persons", "dau", "wau", "mau", "per_person_avg", "per_person_median", "per_person_p90", "sum", "avg"]))
@click.option("--property", "property_", metavar="KEY", help="The numeric property for sum / avg, e.g. revenue.")
@click.option("--interval", default="day", show_default=True, type=click.Choice(["hour", "day", "week", "month"]))
@click.option("--tz", "time_zone", metavar="ZONE", help="Time zone of dates and buckets (default UTC).")
@click.option("--where", multiple=True, metavar="FIELD:OP[:VALUE]", help="Keep events (or persons, with traits.KEY); repeatable.")
@click.option("--breakdown", metavar="FIELD", help="Split by an event property or text column.")
@click.option("--view", default="trend", show_default=True, type=click.Choice(["trend", "stickiness", "lifecycle"]),
              help="The measure per bucket, persons by active days, or new / returning / resurrecting / dormant.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--explain", is_flag=True, help="Print the SQL instead of running it.")
@click.pass_obj
def query_trend(
    obj: Context, start: str, end: str, event: str | None, measure: str, property_: str | None, interval: str,
    time_zone: str | None, where: tuple[str, ...], breakdown: str | None, view: str, as_json: bool, explain: bool,
) -> None:
    """A measure of an event per hour, day, week or month; its stickiness; its lifecycle."""
    from footfall import analytics
    from footfall.analytics import trends
    from footfall.analytics.cli import parse_where, print_lifecycle, print_stickiness, print_trend
    from footfall.analytics.wire import spec_from_json, to_json
    from footfall.api.local import open_reader

    document: dict[str, Any] = {"from": start, "to": end, "measure": measure, "interval": interval,
                                "filters": [parse_where(text, f"--where {text!r}") for text in where]}
    for key, value in (("event", event), ("property", property_), ("time_zone", time_zone), ("breakdown", breakdown)):
        if value is not None:
            document[key] = value
    spec = spec_from_json("trend", document)
    with open_reader(obj.data_dir) as database:
        dialect, project = database.backend.dialect, database.project_id
        if explain:
            compiler = {"trend": trends.compile, "stickiness": trends.compile_activity, "lifecycle": trends.compile_lifecycle}[view]
            click.echo(compiler(spec, dialect, project_id=project))
            return
        if view == "stickiness":
            sticky = trends.stickiness(database, spec)
            if as_json:
                click.echo(json.dumps(sticky))
            else:
                print_stickiness(sticky, console)
            return
        if view == "lifecycle":
            cycle = trends.lifecycle(database, spec)
            if as_json:
                click.echo(json.dumps(to_json(cycle)))
            else:
                print_lifecycle(cycle, console)
            return
        result = analytics.run(database, spec)
    if as_json:
        click.echo(json.dumps(to_json(result), ensure_ascii=False))
    else:
        print_trend(result, console)


@query.command(name="retention")
@click.option("--start", "start_event", metavar="EVENT", help="The event that puts a person in a cohort (default: any event, i.e. first seen).")
@click.option("--return", "return_event", metavar="EVENT", help="The event that counts as coming back (default: the start event).")
@click.option("--period", default="week", show_default=True, type=click.Choice(["day", "week", "month"]))
@click.option("--periods", default=8, show_default=True, type=click.IntRange(1, 400), help="Periods after the cohort's own.")
@click.option("--mode", default="first_time", show_default=True, type=click.Choice(["first_time", "recurring"]))
@click.option("--counting", default="on", show_default=True, type=click.Choice(["on", "on_or_after"]),
              help="Returned in exactly period N, or in N or later (cumulative).")
@click.option("--from", "start", metavar="DATE", help="First day of the cohorts, ISO 8601.")
@click.option("--to", "end", metavar="DATE", help="End of the range, exclusive.")
@click.option("--tz", "time_zone", metavar="ZONE", help="Time zone of dates and periods (default UTC).")
@click.option("--where", multiple=True, metavar="FIELD:OP[:VALUE]", help="Keep events (or persons, with traits.KEY); repeatable.")
@click.option("--breakdown", metavar="FIELD", help="Group cohorts by a person trait (traits.KEY), a column or a property of the first event.")
@click.option("--counts", is_flag=True, help="Show persons instead of rates.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--explain", is_flag=True, help="Print the SQL instead of running it.")
@click.pass_obj
def query_retention(
    obj: Context, start_event: str | None, return_event: str | None, period: str, periods: int, mode: str, counting: str,
    start: str | None, end: str | None, time_zone: str | None, where: tuple[str, ...], breakdown: str | None,
    counts: bool, as_json: bool, explain: bool,
) -> None:
    """Cohorts by first (or every) occurrence of an event, and how many come back, period by period."""
    from footfall import analytics
    from footfall.analytics.cli import parse_where
    from footfall.analytics.retention import format_table
    from footfall.analytics.wire import spec_from_json, to_json
    from footfall.api.local import open_reader

    document: dict[str, Any] = {"start_event": start_event, "return_event": return_event, "period": period,
                                "periods": periods, "mode": mode, "counting": counting,
                                "filters": [parse_where(text, f"--where {text!r}") for text in where]}
    for key, value in (("from", start), ("to", end), ("time_zone", time_zone), ("breakdown", breakdown)):
        if value is not None:
            document[key] = value
    spec = spec_from_json("retention", document)
    with open_reader(obj.data_dir) as database:
        if explain:
            click.echo(analytics.compile(spec, database.backend.dialect, project_id=database.project_id))
            return
        result = analytics.run(database, spec)
    if as_json:
        click.echo(json.dumps(to_json(result), ensure_ascii=False))
    else:
        click.echo(format_table(result, "count" if counts else "rate"))


_CLEAN_HELP = ("Replace every match of REGEX (RE2) by ALIAS, e.g. --clean '^/product/\\d+$' /product/:id;"
               " repeatable, applied in order.")


@query.command(name="paths")
@click.option("--node-type", type=click.Choice(["pages", "events"]), help="Steps are page views' paths (default) or event names.")
@click.option("--start", "start_step", metavar="STEP", help="Paths begin at a session's first STEP (after cleaning).")
@click.option("--end", "end_step", metavar="STEP", help="Paths stop at the first STEP; steps then count back from it (0).")
@click.option("--max-steps", type=click.IntRange(2, 20), help="Steps per path (default 5).")
@click.option("--edges", "edge_limit", type=click.IntRange(1, 1000), help="The busiest edges kept (default 50).")
@click.option("--event", "events", multiple=True, metavar="EVENT", help="With --node-type events: only these events; repeatable.")
@click.option("--exclude", multiple=True, metavar="STEP", help="Drop this step (as sent or as cleaned); repeatable.")
@click.option("--clean", "cleaning", multiple=True, nargs=2, metavar="REGEX ALIAS", help=_CLEAN_HELP)
@click.option("--conversion", metavar="EVENT", help="Compare the paths of sessions with EVENT and of those without.")
@click.option("--from", "start", metavar="DATE", help="First day (or time), ISO 8601.")
@click.option("--to", "end", metavar="DATE", help="End of the range, exclusive.")
@click.option("--tz", "time_zone", metavar="ZONE", help="Time zone of the dates (default UTC).")
@click.option("--where", multiple=True, metavar="FIELD:OP[:VALUE]", help="Keep events (or persons, with traits.KEY); repeatable.")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False, path_type=Path), help="Read the spec from a JSON file instead.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--explain", is_flag=True, help="Print the SQL instead of running it.")
@click.pass_obj
def query_paths(obj: Context, /, spec_file: Path | None, as_json: bool, explain: bool, **flags: Any) -> None:
    """The busiest transitions between pages (or events) within sessions, and
    with --conversion, the steps that set converting sessions apart.

    e.g. footfall query paths --start / --clean '^/product/\\d+$' /product/:id --conversion purchase
    """
    from footfall import analytics
    from footfall.analytics.cli import parse_where, read_spec_file
    from footfall.analytics.errors import SpecError
    from footfall.analytics.paths import format_paths
    from footfall.analytics.wire import spec_from_json, to_json
    from footfall.api.local import open_reader

    if spec_file is not None:
        if any(flags.values()):
            raise SpecError("--spec", "give either --spec FILE or the paths flags, not both")
        document = read_spec_file(spec_file)
    else:
        document = {"events": list(flags["events"]), "exclusions": list(flags["exclude"]),
                    "cleaning": [{"pattern": pattern, "alias": alias} for pattern, alias in flags["cleaning"]],
                    "filters": [parse_where(text, f"--where {text!r}") for text in flags["where"]]}
        for key, flag in (("node_type", "node_type"), ("start", "start_step"), ("end", "end_step"), ("max_steps", "max_steps"),
                          ("edge_limit", "edge_limit"), ("conversion_event", "conversion"), ("from", "start"), ("to", "end"),
                          ("time_zone", "time_zone")):
            if flags[flag] is not None:
                document[key] = flags[flag]
    spec = spec_from_json("paths", document)
    with open_reader(obj.data_dir) as database:
        if explain:
            click.echo(analytics.compile(spec, database.backend.dialect, project_id=database.project_id))
            return
        result = analytics.run(database, spec)
    if as_json:
        click.echo(json.dumps(to_json(result), ensure_ascii=False))
    else:
        click.echo(format_paths(result))


@query.command(name="heatmap")
@click.option("--page", metavar="PATH", help="One page (after cleaning); default: the most clicked pages.")
@click.option("--pages", "page_limit", type=click.IntRange(1, 100), help="How many of the most clicked pages (default 10).")
@click.option("--clean", "cleaning", multiple=True, nargs=2, metavar="REGEX ALIAS", help=_CLEAN_HELP)
@click.option("--columns", type=click.IntRange(1, 200), help="Columns across the viewport's width (default 20).")
@click.option("--y-scale", type=click.Choice(["pixels", "page"]), help="Rows of --row-height page pixels (default), or shares of the page's height.")
@click.option("--row-height", type=click.IntRange(1, 100_000), help="Page pixels per row (default 100).")
@click.option("--rows", type=click.IntRange(1, 1000), help="At most (pixels) or exactly (page) this many rows (default 50).")
@click.option("--rage", "rage_clicks", type=click.Choice(["detected", "tracked"]), help="Rage clicks found among clicks (default) or footfall.js's rage_click events.")
@click.option("--hotspots", "hotspot_limit", type=click.IntRange(0, 100), help="Rage hot spots per page (default 10).")
@click.option("--scroll-source", type=click.Choice(["scroll", "page_leave"]), help="Scroll depths from scroll events (default) or page leaves' max_scroll.")
@click.option("--from", "start", metavar="DATE", help="First day (or time), ISO 8601.")
@click.option("--to", "end", metavar="DATE", help="End of the range, exclusive.")
@click.option("--tz", "time_zone", metavar="ZONE", help="Time zone of the dates (default UTC).")
@click.option("--where", multiple=True, metavar="FIELD:OP[:VALUE]", help="Keep events (or persons, with traits.KEY); repeatable.")
@click.option("--png", "png_file", type=click.Path(dir_okay=False, path_type=Path), help="Also write the first page's (or --page's) heatmap as a PNG image.")
@click.option("--cell-size", default=16, show_default=True, type=click.IntRange(1, 256), help="Pixels per grid cell in the PNG.")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False, path_type=Path), help="Read the spec from a JSON file instead.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--explain", is_flag=True, help="Print the SQL instead of running it.")
@click.pass_obj
def query_heatmap(
    obj: Context, /, png_file: Path | None, cell_size: int, spec_file: Path | None, as_json: bool, explain: bool, **flags: Any
) -> None:
    """Clicks on a grid per page (x by the viewport's width, y in page pixels),
    rage-click hot spots and scroll depths; --png draws one page.

    e.g. footfall query heatmap --page /checkout --png checkout.png
    """
    from footfall import analytics
    from footfall.analytics.cli import parse_where, read_spec_file
    from footfall.analytics.errors import SpecError
    from footfall.analytics.heatmaps import format_heatmap, heatmap_png
    from footfall.analytics.wire import spec_from_json, to_json
    from footfall.api.local import open_reader

    if spec_file is not None:
        if any(flags.values()):
            raise SpecError("--spec", "give either --spec FILE or the heatmap flags, not both")
        document = read_spec_file(spec_file)
    else:
        document = {"cleaning": [{"pattern": pattern, "alias": alias} for pattern, alias in flags.pop("cleaning")],
                    "filters": [parse_where(text, f"--where {text!r}") for text in flags.pop("where")]}
        renamed = {"start": "from", "end": "to"}
        document.update({renamed.get(key, key): value for key, value in flags.items() if value is not None})
    spec = spec_from_json("heatmap", document)
    with open_reader(obj.data_dir) as database:
        if explain:
            click.echo(analytics.compile(spec, database.backend.dialect, project_id=database.project_id))
            return
        result = analytics.run(database, spec)
    if png_file is not None:
        image = heatmap_png(result, page=spec.page, cell_size=cell_size)
        try:
            png_file.write_bytes(image)
        except OSError as exc:
            raise SpecError("--png", f"cannot write {png_file}: {exc.strerror}") from None
    if as_json:
        click.echo(json.dumps(to_json(result), ensure_ascii=False))
    else:
        click.echo(format_heatmap(result))
        if png_file is not None:
            click.echo(f"wrote {png_file}")


@cli.command()
@click.pass_obj
def info(obj: Context) -> None:
    """Where the data is, which store, schema version, and what it holds."""
    from footfall.api.local import open_reader

    path = obj.data_dir
    with open_reader(path) as database:
        console.print(f"footfall {__version__}")
        console.print(f"config        {path / CONFIG_FILE}{'' if (path / CONFIG_FILE).exists() else ' (defaults)'}")
        console.print(f"store         {database.backend.description}")
        console.print(f"schema        version {database.schema_version()}")
        console.print(f"project       {database.project_id}")
        print_summary(database.summary(), path)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--demo-site", is_flag=True, help="Also serve the demo shop, instrumented with footfall.js, at /.")
@click.option(
    "--demo-write-key", metavar="KEY",
    help="Write key for the demo shop's tracker (default: one made for the source 'demo-shop', kept in the data directory).",
)
@click.pass_obj
def serve(obj: Context, host: str, port: int, log_level: str, demo_site: bool, demo_write_key: str | None) -> None:
    """Run the Footfall server: the collector (Segment-compatible /v1/batch,
    /v1/track, ...) and the browser tracker at /static/footfall.js, its intake
    worker, /metrics and the read API.

    Events are sent with a write key (`footfall keys create --kind write`). The
    store side runs in a child process, so collecting and storing each get a core.
    """
    if demo_write_key is not None and not demo_site:
        raise click.UsageError("--demo-write-key goes with --demo-site")
    _check_port(host, port)
    _run_server(obj.data_dir, host, port, log_level, demo_site=demo_site, demo_key=demo_write_key)


def _check_port(host: str, port: int) -> None:
    """A clear error now for a port that is taken, rather than a log line from uvicorn later."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise FootfallError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another port with --port") from None


def _run_server(
    path: Path, host: str, port: int, log_level: str, *, demo_site: bool = False, demo_key: str | None = None
) -> None:
    import uvicorn

    from footfall.api.app import create_front_app
    from footfall.api.local import publish, withdraw
    from footfall.api.service import FrontService, new_admin_token
    from footfall.tracker.demo_site import DemoSite, demo_write_key

    init_data_dir(path)
    token = new_admin_token()
    front = FrontService(path, admin_token=token)
    try:
        site = DemoSite(demo_write_key(path, front.keys, demo_key)) if demo_site else None
        front.start()
    except BaseException:
        front.close()
        raise
    if not any(record.active and record.kind == "write" for record in front.keys.records()):
        errors.print("[yellow]no write key yet[/yellow]: create one with `footfall keys create --kind write --source web`")

    def shutdown() -> None:
        withdraw(path)
        front.close()

    try:
        publish(path, f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}", token)
        app = create_front_app(front, on_shutdown=shutdown, demo_site=site)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    finally:
        shutdown()


@cli.command(hidden=True)
@click.option("--socket", "socket_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--parent", type=int, help="Exit when this process does.")
@click.pass_obj
def worker(obj: Context, socket_path: Path, parent: int | None) -> None:
    """The store side of `footfall serve`, which starts it: the intake worker,
    reads and admin, over a Unix socket."""
    import gc
    import os

    import uvicorn

    from footfall.api.app import create_app
    from footfall.api.service import TOKEN_ENV, StoreService
    from footfall.lifetime import exit_with_parent

    if parent is not None:
        exit_with_parent(parent)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise FootfallError(f"`footfall worker` is started by `footfall serve` (it needs {TOKEN_ENV})")
    service = StoreService(obj.data_dir)
    # The worker allocates many short-lived objects per event while holding a
    # large, long-lived state (identity graph, persons): collect young objects
    # less often, and keep what exists at start out of the collector's scans.
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()
    try:
        app = create_app(service.database, token, on_shutdown=service.close, service=service)
        uvicorn.run(app, uds=str(socket_path), log_level="warning", access_log=False)
    finally:
        service.close()


# -- keys, tracking plans, dead letters -------------------------------------------------


@cli.group()
def keys() -> None:
    """Write keys (sources that send events) and secret keys (reading and admin)."""


@keys.command(name="create")
@click.option("--kind", type=click.Choice(["write", "secret"]), default="write", show_default=True)
@click.option("--source", default=None, help="Name of the source a write key sends for (web, ios, backend, ...).")
@click.option("--drop-ip", is_flag=True, help="Store no IP address for this source's events.")
@click.option("--anonymize-ip", is_flag=True, help="Zero the last octet of this source's IP addresses.")
@click.pass_obj
def keys_create(obj: Context, kind: str, source: str | None, drop_ip: bool, anonymize_ip: bool) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    from footfall.keys import KeyStore

    init_data_dir(obj.data_dir)
    key, record = KeyStore(obj.data_dir).create(
        "write" if kind == "write" else "secret", source or ("admin" if kind == "secret" else "default"),
        drop_ip=drop_ip, anonymize_ip=anonymize_ip,
    )
    click.echo(key)
    errors.print(f"created {kind} key {record.id} for source {record.source!r}; it is not shown again", highlight=False)


@keys.command(name="list")
@click.pass_obj
def keys_list(obj: Context) -> None:
    """The keys (ids, never the keys themselves)."""
    from footfall.keys import KeyStore

    table = Table("id", "kind", "source", "created", "revoked", "ip", header_style="bold")
    for record in KeyStore(obj.data_dir).records():
        ip = "dropped" if record.drop_ip else "anonymised" if record.anonymize_ip else ""
        revoked = f"{record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else ""
        table.add_row(record.id, record.kind, record.source, f"{record.created_at:%Y-%m-%d %H:%M}", revoked, ip)
    console.print(table)


@keys.command(name="revoke")
@click.argument("key_id")
@click.pass_obj
def keys_revoke(obj: Context, key_id: str) -> None:
    """Revoke a key by id; a running server refuses it within a second."""
    from footfall.keys import KeyStore

    KeyStore(obj.data_dir).revoke(key_id)
    console.print(f"revoked key {key_id}")


@cli.group()
def plans() -> None:
    """Tracking plans: a JSON Schema per event name, with a mode (allow, warn, block)."""


@plans.command(name="set")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def plans_set(obj: Context, file: Path) -> None:
    """Add or replace a plan from a JSON file (a running server picks it up)."""
    from footfall.intake.plans import PlanBook

    init_data_dir(obj.data_dir)
    plan = PlanBook(obj.data_dir).save(file.read_bytes(), str(file))
    console.print(f"tracking plan {plan.name!r} ({plan.mode}, {len(plan.events)} events) is in force")


@plans.command(name="list")
@click.pass_obj
def plans_list(obj: Context) -> None:
    """The plans in force."""
    from footfall.intake.plans import PlanBook

    book = PlanBook(obj.data_dir)
    table = Table("plan", "mode", "unplanned events", "sources", "events", header_style="bold")
    for compiled in book.plans():
        plan = compiled.plan
        table.add_row(plan.name, plan.mode, plan.unplanned_events, ", ".join(plan.sources or ["all"]), ", ".join(sorted(plan.events)))
    console.print(table)
    if book.load_error:
        errors.print(f"[red]not in force:[/red] {book.load_error}", highlight=False, soft_wrap=True)


@plans.command(name="remove")
@click.argument("name")
@click.pass_obj
def plans_remove(obj: Context, name: str) -> None:
    """Remove a plan by name."""
    from footfall.intake.plans import PlanBook

    PlanBook(obj.data_dir).remove(name)
    console.print(f"removed tracking plan {name!r}")


@cli.group()
def dlq() -> None:
    """The dead-letter store: messages that were not accepted, with why."""


@dlq.command(name="list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--source", help="Only letters from this source.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per letter.")
@click.pass_obj
def dlq_list(obj: Context, limit: int, source: str | None, as_json: bool) -> None:
    """Newest letters first."""
    from footfall.api.local import DeadLetterDesk

    with DeadLetterDesk(obj.data_dir) as desk:
        letters = desk.list(limit=limit, source=source)
    if as_json:
        for letter in letters:
            click.echo(json.dumps(letter._asdict(), default=_cell, ensure_ascii=False))
        return
    table = Table("id", "received", "source", "field", "reason", header_style="bold")
    for letter in letters:
        table.add_row(letter.id, _cell(letter.received_at)[:19], letter.source, letter.field, letter.reason)
    console.print(table)
    console.print(f"[dim]{len(letters)} letter{'s' if len(letters) != 1 else ''}[/dim]")


@dlq.command(name="show")
@click.argument("letter_id")
@click.pass_obj
def dlq_show(obj: Context, letter_id: str) -> None:
    """One letter with its payload as received."""
    from footfall.api.local import DeadLetterDesk

    with DeadLetterDesk(obj.data_dir) as desk:
        letters = desk.list(limit=1, ids=[letter_id])
    if not letters:
        raise FootfallError(f"no dead letter {letter_id!r}; `footfall dlq list` shows the ids")
    letter = letters[0]
    for label, value in (("id", letter.id), ("received", _cell(letter.received_at)), ("source", letter.source),
                         ("field", letter.field), ("reason", letter.reason)):
        console.print(f"{label:<9} {value}", highlight=False, soft_wrap=True)
    try:
        click.echo(json.dumps(json.loads(letter.payload), indent=2, ensure_ascii=False))
    except ValueError:
        click.echo(letter.payload)


@dlq.command(name="replay")
@click.argument("letter_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every letter (or every letter of --source).")
@click.option("--source", help="Only letters from this source.")
@click.pass_obj
def dlq_replay(obj: Context, letter_ids: tuple[str, ...], replay_all: bool, source: str | None) -> None:
    """Retry letters against the current contract and tracking plans; those that
    pass are stored and leave the dead-letter table."""
    from footfall.api.local import DeadLetterDesk

    if not letter_ids and not replay_all and source is None:
        raise FootfallError("name letter ids, or use --all (optionally with --source)")
    with DeadLetterDesk(obj.data_dir) as desk:
        report = desk.replay(ids=list(letter_ids) or None, source=source)
    console.print(f"replayed {report.replayed:,} letters ({report.stored_events:,} events stored)")
    if report.still_failing:
        errors.print(f"[yellow]{len(report.still_failing):,} still failing[/yellow]:")
        for letter_id, field, reason in report.still_failing[:SHOWN_REJECTIONS]:
            errors.print(f"  {letter_id}  {field}: {reason}", highlight=False, soft_wrap=True)


def _add_segment_commands() -> None:
    from footfall.segments.commands import cohorts_group, segments_group

    cli.add_command(segments_group)
    cli.add_command(cohorts_group)


_add_segment_commands()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        status = cli.main(args=argv, prog_name="footfall", standalone_mode=False)
    except FootfallError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Abort:
        errors.print("aborted")
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code in (1, 2) else exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    if isinstance(status, int) and status:
        sys.exit(status)


