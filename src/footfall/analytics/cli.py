"""``footfall query ...``: analyses from the command line.

Flags build the same JSON document the HTTP query API takes (see
``footfall.analytics.wire``); ``--spec FILE`` reads one instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from footfall.analytics.engagement import EngagementResult
from footfall.analytics.errors import SpecError
from footfall.analytics.funnels import FunnelResult
from footfall.analytics.kpis import KpiResult
from footfall.analytics.trends import LifecyclePoint, TrendResult


def parse_where(text: str, at: str) -> dict[str, Any]:
    """``FIELD:OP[:VALUE]``; the value is JSON if it reads as JSON (``10``,
    ``true``, ``"10"``), else text; for ``in``/``not_in``, ``|`` separates items.

    >>> parse_where("properties.price:gt:10", "--where")
    {'field': 'properties.price', 'op': 'gt', 'value': 10}
    >>> parse_where("properties.plan:in:pro|team", "--where")
    {'field': 'properties.plan', 'op': 'in', 'value': ['pro', 'team']}
    >>> parse_where("properties.coupon:is_set", "--where")
    {'field': 'properties.coupon', 'op': 'is_set'}
    """
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise SpecError(at, f"give FIELD:OP[:VALUE], e.g. properties.price:gt:10; got {text!r}")
    condition: dict[str, Any] = {"field": parts[0], "op": parts[1]}
    if len(parts) == 3:
        raw = parts[2]
        condition["value"] = [_scalar(item) for item in raw.split("|")] if parts[1] in ("in", "not_in") else _scalar(raw)
    return condition


def _scalar(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def funnel_document(
    steps: str | None, window: str | None, mode: str | None, start: str | None, end: str | None, time_zone: str | None,
    where: tuple[str, ...], exclude: tuple[str, ...], breakdown: str | None, reference: str | None,
) -> dict[str, Any]:
    """The JSON spec the flags of ``footfall query funnel`` describe."""
    if not steps:
        raise SpecError("--steps", "name the steps, e.g. --steps view_product,add_to_cart,purchase (or give --spec FILE)")
    document: dict[str, Any] = {"steps": [step.strip() for step in steps.split(",")]}
    for key, value in (("window", window), ("mode", mode), ("from", start), ("to", end), ("time_zone", time_zone),
                       ("breakdown", breakdown), ("step_reference", reference)):
        if value is not None:
            document[key] = value
    if where:
        document["filters"] = [parse_where(text, f"--where {text!r}") for text in where]
    exclusions = []
    for text in exclude:
        event, *bounds = text.split(":")
        if len(bounds) not in (0, 2) or not all(bound.isdigit() for bound in bounds):
            raise SpecError("--exclude", f"give EVENT or EVENT:FROM_STEP:TO_STEP (0 is the first step); got {text!r}")
        exclusion: dict[str, Any] = {"event": event}
        if bounds:
            exclusion.update(from_step=int(bounds[0]), to_step=int(bounds[1]))
        exclusions.append(exclusion)
    if exclusions:
        document["exclusions"] = exclusions
    return document


def read_spec_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise SpecError("--spec", f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SpecError("--spec", f"{path} is not JSON: {exc}") from None


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def print_funnel(result: FunnelResult, console: Console, max_groups: int = 20) -> None:
    overall = result.overall
    table = Table("step", "event", "persons", "conversion", "dropped", "median time", header_style="bold")
    for step in overall.steps:
        table.add_row(str(step.index + 1), step.event, f"{step.count:,}", f"{step.conversion_rate:.1%}",
                      f"{step.dropped:,}", _seconds(step.median_time))
    console.print(table)
    ttc = overall.time_to_convert
    console.print(f"[dim]{overall.converted:,} of {overall.entered:,} converted ({overall.conversion_rate:.1%}); "
                  f"time to convert median {_seconds(ttc.median)}, average {_seconds(ttc.average)}[/dim]")
    if not result.groups:
        return
    by_value = Table(result.spec.breakdown or "breakdown", *(f"{i + 1}. {step.event}" for i, step in enumerate(result.spec.steps)),
                     "conversion", title=f"by {result.spec.breakdown}", title_justify="left", header_style="bold")
    for group in result.groups[:max_groups]:
        by_value.add_row("(none)" if group.breakdown is None else group.breakdown,
                         *(f"{step.count:,}" for step in group.steps), f"{group.conversion_rate:.1%}")
    console.print(by_value)
    if len(result.groups) > max_groups:
        console.print(f"[dim]{len(result.groups) - max_groups} more values; --json shows all[/dim]")


def funnel_options(command: Any) -> Any:
    for option in reversed([
        click.option("--steps", help="Comma-separated step events, e.g. view_product,add_to_cart,purchase."),
        click.option("--window", help="Conversion window from step 1, e.g. 30m, 1h, 14d (default 14d)."),
        click.option("--mode", type=click.Choice(["ordered", "strict", "unordered"]), help="Step order (default ordered)."),
        click.option("--from", "start", metavar="DATE", help="First day (or time) of step 1, ISO 8601."),
        click.option("--to", "end", metavar="DATE", help="End of the range, exclusive."),
        click.option("--tz", "time_zone", metavar="ZONE", help="Time zone of dates, e.g. Europe/Berlin (default UTC)."),
        click.option("--where", multiple=True, metavar="FIELD:OP[:VALUE]",
                     help="Keep events (or persons, with traits.KEY) matching; repeatable. Ops: eq neq in not_in gt gte lt lte contains regex is_set is_not_set."),
        click.option("--exclude", multiple=True, metavar="EVENT[:FROM:TO]",
                     help="Discard attempts with EVENT between steps FROM and TO (0-based; default 0:1)."),
        click.option("--breakdown", metavar="FIELD", help="Split by a property of step 1's event, e.g. properties.utm_source."),
        click.option("--reference", type=click.Choice(["total", "previous"]), help="Conversion relative to step 1 (total) or the previous step."),
        click.option("--spec", "spec_file", type=click.Path(dir_okay=False, path_type=Path), help="Read the spec from a JSON file instead."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        click.option("--explain", is_flag=True, help="Print the SQL instead of running it."),
    ]):
        command = option(command)
    return command


def print_engagement(result: EngagementResult, console: Console) -> None:
    spec = result.spec
    console.print(f"[bold]{result.persons:,}[/bold] persons with events in the {_seconds(spec.window)} up to "
                  f"{result.as_of:%Y-%m-%d %H:%M} UTC; mean score {result.mean:.2f}, median {result.median:.2f}")
    bands = Table("band", "persons", "scores", header_style="bold")
    bands.add_row("high", f"{result.bands.get('high', 0):,}", f">= {result.high_cut:.2f}")
    bands.add_row("medium", f"{result.bands.get('medium', 0):,}", f"{result.low_cut:.2f} - {result.high_cut:.2f}")
    bands.add_row("low", f"{result.bands.get('low', 0):,}", f"<= {result.low_cut:.2f}")
    console.print(bands)
    if result.top:
        top = Table("person", "score", "band", "events", title="top", title_justify="left", header_style="bold")
        for entry in result.top:
            top.add_row(entry.person_id, f"{entry.score:.2f}", entry.band, f"{entry.events:,}")
        console.print(top)


def print_kpis(result: KpiResult, console: Console) -> None:
    overview = Table(show_header=False, box=None)
    rows = [
        ("active persons", f"{result.active_persons:,}"),
        ("sessions", f"{result.sessions:,}"),
        ("average session", _seconds(result.average_session_duration)),
        ("engagement rate", f"{result.engagement_rate:.1%}"),
        ("bounce rate", f"{result.bounce_rate:.1%}"),
        ("pages per session", f"{result.pages_per_session:.2f}"),
    ]
    if result.conversion_rate is not None:
        rows.append((f"conversion ({result.spec.conversion_event})", f"{result.conversion_rate:.1%}"))
    rows += [(f"adoption of {event}", f"{rate:.1%}") for event, rate in result.adoption.items()]
    for name, value in rows:
        overview.add_row(name, value)
    console.print(overview)
    if result.clv:
        clv = Table("cohort", "persons", "revenue", "per person", title="revenue per person by first month",
                    title_justify="left", header_style="bold")
        for cohort in result.clv:
            clv.add_row(cohort.cohort, f"{cohort.persons:,}", f"{cohort.revenue:,.2f}", f"{cohort.revenue_per_person:,.2f}")
        console.print(clv)


def print_trend(result: TrendResult, console: Console, max_series: int = 8) -> None:
    shown = result.series[:max_series]
    names = [("all" if entry.breakdown is None and result.spec.breakdown is None else str(entry.breakdown)) for entry in shown]
    table = Table("bucket", *names, header_style="bold",
                  title=f"{result.spec.measure} of {result.spec.event or 'every event'} per {result.spec.interval}", title_justify="left")
    for index, point in enumerate(shown[0].points if shown else ()):
        table.add_row(point.bucket, *(_number(entry.points[index].value) for entry in shown))
    console.print(table)
    if len(result.series) > max_series:
        console.print(f"[dim]{len(result.series) - max_series} more breakdown values; --json shows all[/dim]")


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def print_stickiness(counts: dict[int, int], console: Console) -> None:
    table = Table("active days", "persons", header_style="bold")
    for days, persons in counts.items():
        table.add_row(str(days), f"{persons:,}")
    console.print(table)


def print_lifecycle(points: tuple[LifecyclePoint, ...], console: Console) -> None:
    table = Table("bucket", "new", "returning", "resurrecting", "dormant", header_style="bold")
    for point in points:
        table.add_row(point.bucket, f"{point.new:,}", f"{point.returning:,}", f"{point.resurrecting:,}", f"{point.dormant:,}")
    console.print(table)
