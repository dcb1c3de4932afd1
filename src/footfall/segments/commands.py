"""``footfall segments ...`` and ``footfall cohorts ...``.

Definitions are written to the data directory's ``segments.json`` (a running
server picks a change up within a second). Sizes, samples and members are
computed by SQL over the store, or through a running server that holds it.
Cohorts write member rows to the store: straight into it, or through the
running server's API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from footfall.config import init_data_dir
from footfall.segments import manage
from footfall.segments.catalog import Cohort, SegmentCatalog
from footfall.segments.language import SegmentDefinition, parse_definitions, parse_text
from footfall.segments.templates import TEMPLATES

console = Console()
errors = Console(stderr=True)
SHOWN_IDS = 20


def _definitions(file: Path | None, template: str | None, parameters: tuple[str, ...], segment_id: str | None) -> list[SegmentDefinition]:
    """The definitions of a JSON/YAML file, or a ready-made template with ``KEY=VALUE`` parameters."""
    if (file is None) == (template is None):
        raise click.UsageError("give a definition FILE (JSON or YAML) or --template NAME, not both")
    if template is not None:
        if template not in TEMPLATES:
            raise click.UsageError(f"no template {template!r}; choose from {', '.join(TEMPLATES)}")
        options: dict[str, Any] = {}
        for item in parameters:
            key, separator, value = item.partition("=")
            if not separator:
                raise click.UsageError(f"--param takes KEY=VALUE (e.g. within=14d); got {item!r}")
            options[key.replace("-", "_")] = int(value) if value.isdigit() else value
        if segment_id:
            options["segment_id"] = segment_id
        try:
            return [TEMPLATES[template](**options)]
        except TypeError as exc:
            raise click.UsageError(f"template {template}: {exc}") from None
    assert file is not None
    form: Literal["json", "yaml"] = "yaml" if file.suffix.lower() in (".yaml", ".yml") else "json"
    definitions = parse_definitions(parse_text(file.read_text(encoding="utf-8"), form))
    if segment_id:
        if len(definitions) != 1:
            raise click.UsageError("--id renames one definition; the file holds several")
        definitions = [SegmentDefinition(segment_id, definitions[0].condition, definitions[0].name, definitions[0].description)]
    return definitions


def _print_preview(preview: manage.Preview) -> None:
    console.print(f"[bold]{preview.segment}[/bold]: {preview.size:,} members at {preview.at:%Y-%m-%d %H:%M} UTC")
    if preview.sample:
        console.print("  e.g. " + ", ".join(preview.sample), highlight=False, soft_wrap=True)
    for warning in preview.warnings:
        errors.print(f"  [yellow]warning[/yellow]: {escape(warning)}", highlight=False, soft_wrap=True)
    for item in preview.overlaps[:5]:
        console.print(f"  overlaps {item.other}: {item.both:,} persons ({item.share:.0%} of this segment)", highlight=False)


def _reader(obj: Any) -> Any:
    from footfall.api.local import open_reader

    return open_reader(obj.data_dir)


definition_source = [
    click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)),
    click.option("--template", help=f"A ready-made segment: {', '.join(TEMPLATES)}."),
    click.option("--param", "parameters", multiple=True, metavar="KEY=VALUE", help="A template parameter, e.g. within=14d."),
    click.option("--id", "segment_id", help="The segment's id (renames the file's or template's)."),
    click.option("--json", "as_json", is_flag=True, help="Print JSON."),
]


def _with_source(command: Any) -> Any:
    for decorator in reversed(definition_source):
        command = decorator(command)
    return command


@click.group(name="segments")
def segments_group() -> None:
    """Saved segments: live memberships kept by the pipeline (see docs/segments.md)."""


@segments_group.command(name="templates")
def segments_templates() -> None:
    """The ready-made segments and their conditions."""
    table = Table("template", "name", "condition", header_style="bold")
    for template_id, template in TEMPLATES.items():
        definition = template()
        table.add_row(template_id, definition.description, json.dumps(definition.condition.to_json()))
    console.print(table)


@segments_group.command(name="preview")
@_with_source
@click.pass_obj
def segments_preview(obj: Any, file: Path | None, template: str | None, parameters: tuple[str, ...],
                     segment_id: str | None, as_json: bool) -> None:
    """Size, a sample and overlaps of a definition, without saving it."""
    catalog = SegmentCatalog(obj.data_dir)
    with _reader(obj) as database:
        definitions = _definitions(file, template, parameters, segment_id)
        previews = [manage.preview(database, catalog, item, alongside=definitions) for item in definitions]
    if as_json:
        click.echo(json.dumps([preview.to_json() for preview in previews]))
        return
    for preview in previews:
        _print_preview(preview)


@segments_group.command(name="create")
@_with_source
@click.option("--replace", is_flag=True, help="Change a saved segment of the same id.")
@click.pass_obj
def segments_create(obj: Any, file: Path | None, template: str | None, parameters: tuple[str, ...],
                    segment_id: str | None, as_json: bool, replace: bool) -> None:
    """Save segments from a JSON/YAML file (one or a list) or a template; a
    running server starts keeping their members within a second."""
    init_data_dir(obj.data_dir)
    catalog = SegmentCatalog(obj.data_dir)
    definitions = _definitions(file, template, parameters, segment_id)
    manage.with_saved(catalog, definitions)  # a bad set fails before any query
    with _reader(obj) as database:
        previews = [manage.preview(database, catalog, item, alongside=definitions) for item in definitions]
    catalog.save_all(definitions, replace=replace)
    if as_json:
        click.echo(json.dumps([preview.to_json() for preview in previews]))
        return
    for preview in previews:
        _print_preview(preview)
        console.print(f"  saved segment {preview.segment!r}")


@segments_group.command(name="list")
@click.option("--sizes", is_flag=True, help="Count each segment's members now (one query per segment).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def segments_list(obj: Any, sizes: bool, as_json: bool) -> None:
    """The saved segments."""
    catalog = SegmentCatalog(obj.data_dir)
    saved = catalog.segments()
    counts: dict[str, int] = {}
    if sizes and saved:
        with _reader(obj) as database:
            definitions = catalog.definitions()
            counts = {item.id: len(manage.members_now(database, catalog, item.id, definitions=definitions)) for item in saved}
    if as_json:
        click.echo(json.dumps([
            {**item.definition().to_json(), "updated_at": item.updated_at.isoformat(), **({"size": counts[item.id]} if counts else {})}
            for item in saved
        ]))
        return
    table = Table("segment", "name", "updated", *(["members"] if counts else []), header_style="bold")
    for item in saved:
        table.add_row(item.id, item.name, f"{item.updated_at:%Y-%m-%d %H:%M}", *([f"{counts[item.id]:,}"] if counts else []))
    console.print(table)
    if not saved:
        errors.print("no saved segments yet: `footfall segments create --template lapsed` saves a ready-made one")


@segments_group.command(name="show")
@click.argument("segment_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def segments_show(obj: Any, segment_id: str, as_json: bool) -> None:
    """A saved segment: its definition, size now, a sample and its overlaps."""
    catalog = SegmentCatalog(obj.data_dir)
    definition = catalog.get(segment_id).definition()
    with _reader(obj) as database:
        preview = manage.preview(database, catalog, definition)
    if as_json:
        click.echo(json.dumps({"segment": definition.to_json(), "preview": preview.to_json()}))
        return
    console.print(json.dumps(definition.to_json(), indent=2), highlight=False)
    _print_preview(preview)


@segments_group.command(name="members")
@click.argument("segment_id")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(0), help="Persons listed (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def segments_members(obj: Any, segment_id: str, limit: int, as_json: bool) -> None:
    """The persons in a saved segment now, one id per line."""
    catalog = SegmentCatalog(obj.data_dir)
    with _reader(obj) as database:
        members = manage.members_now(database, catalog, segment_id)
    shown = members[:limit] if limit else members
    if as_json:
        click.echo(json.dumps({"segment": segment_id, "size": len(members), "members": shown}))
        return
    for person in shown:
        click.echo(person)
    errors.print(f"{len(members):,} members" + (f" ({len(shown):,} listed)" if len(shown) < len(members) else ""))


@segments_group.command(name="overlap")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def segments_overlap(obj: Any, as_json: bool) -> None:
    """How many persons each pair of saved segments shares now."""
    catalog = SegmentCatalog(obj.data_dir)
    with _reader(obj) as database:
        sizes, pairs = manage.overlap_table(database, catalog)
    if as_json:
        click.echo(json.dumps({"sizes": sizes, "overlaps": [
            {"segment": pair.segment, "other": pair.other, "both": pair.both, "share": round(pair.share, 4)} for pair in pairs
        ]}))
        return
    table = Table("segment", "other", "both", "share of segment", header_style="bold")
    for pair in pairs:
        table.add_row(f"{pair.segment} ({sizes[pair.segment]:,})", f"{pair.other} ({sizes[pair.other]:,})",
                      f"{pair.both:,}", f"{pair.share:.0%}")
    console.print(table)


@segments_group.command(name="delete")
@click.argument("segment_id")
@click.pass_obj
def segments_delete(obj: Any, segment_id: str) -> None:
    """Delete a saved segment (refused while another segment reads it)."""
    SegmentCatalog(obj.data_dir).delete(segment_id)
    console.print(f"deleted segment {segment_id!r}")


# -- cohorts --------------------------------------------------------------------------


@click.group(name="cohorts")
def cohorts_group() -> None:
    """Static cohorts: saved snapshot lists of persons."""


def _cohort_request(obj: Any, body: dict[str, Any]) -> tuple[Cohort, list[str], int]:
    """Create a cohort through the running server, or straight in the store."""
    from footfall.api.local import call_server, running_server
    from footfall.store.database import Database

    server = running_server(obj.data_dir)
    if server is not None:
        answer = call_server(server, "/v1/cohorts", body)
        cohort = msgspec.convert(answer["cohort"], Cohort)
        return cohort, answer["unknown_ids"], answer["unknown_count"]
    catalog = SegmentCatalog(obj.data_dir)
    origin, options = body["from"], {"name": body["name"], "replace": body["replace"]}
    with Database.open(obj.data_dir) as database:
        if "segment" in origin:
            return manage.cohort_from_segment(database, catalog, body["id"], origin["segment"], **options), [], 0
        if "funnel" in origin:
            cohort = manage.cohort_from_funnel(
                database, catalog, body["id"], origin["funnel"], step=origin["step"], outcome=origin["outcome"], **options
            )
            return cohort, [], 0
        imported = manage.cohort_from_csv(database, catalog, body["id"], origin["csv"], source=origin["file"], **options)
        return imported.cohort, imported.unknown, len(imported.unknown)


@cohorts_group.command(name="create")
@click.argument("cohort_id")
@click.option("--from-segment", "segment", help="The members of a saved segment now.")
@click.option("--from-funnel", "funnel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A funnel spec (JSON, as `footfall query funnel --spec` reads it).")
@click.option("--step", type=click.IntRange(1), help="With --from-funnel: the step (from 1).")
@click.option("--dropped", is_flag=True, help="With --from-funnel: those who reached the step before but not this one.")
@click.option("--csv", "csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A CSV of ids: a person_id, user_id or anonymous_id column, or one column without a header.")
@click.option("--name", default="", help="A display name.")
@click.option("--replace", is_flag=True, help="Overwrite a cohort of the same id.")
@click.pass_obj
def cohorts_create(obj: Any, cohort_id: str, segment: str | None, funnel: Path | None, step: int | None,
                   dropped: bool, csv_file: Path | None, name: str, replace: bool) -> None:
    """Save a snapshot list of persons from a segment, a funnel step or a CSV file."""
    if sum(value is not None for value in (segment, funnel, csv_file)) != 1:
        raise click.UsageError("give one of --from-segment, --from-funnel (with --step) or --csv")
    if funnel is not None and step is None:
        raise click.UsageError("--from-funnel needs --step N (from 1)")
    origin: dict[str, Any]
    if segment is not None:
        origin = {"segment": segment}
    elif funnel is not None:
        origin = {"funnel": json.loads(funnel.read_text(encoding="utf-8")), "step": step,
                  "outcome": "dropped" if dropped else "converted"}
    else:
        assert csv_file is not None
        origin = {"csv": csv_file.read_text(encoding="utf-8"), "file": csv_file.name}
    init_data_dir(obj.data_dir)
    cohort, unknown, unknown_count = _cohort_request(
        obj, {"id": cohort_id, "name": name, "replace": replace, "from": origin}
    )
    console.print(f"saved cohort {cohort.id!r}: {cohort.size:,} persons ({cohort.origin})", highlight=False)
    if unknown_count:
        shown = ", ".join(unknown[:SHOWN_IDS])
        errors.print(f"[yellow]{unknown_count:,} ids matched no stored person[/yellow]: {shown}", highlight=False, soft_wrap=True)


@cohorts_group.command(name="list")
@click.pass_obj
def cohorts_list(obj: Any) -> None:
    """The saved cohorts."""
    table = Table("cohort", "name", "persons", "from", "saved", header_style="bold")
    for cohort in SegmentCatalog(obj.data_dir).cohorts():
        table.add_row(cohort.id, cohort.name, f"{cohort.size:,}", cohort.origin, f"{cohort.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


@cohorts_group.command(name="members")
@click.argument("cohort_id")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(0), help="Persons listed (0: all).")
@click.pass_obj
def cohorts_members(obj: Any, cohort_id: str, limit: int) -> None:
    """The persons of a cohort, one id per line."""
    catalog = SegmentCatalog(obj.data_dir)
    with _reader(obj) as database:
        members = catalog.cohort_members(database, cohort_id)
    for person in members[:limit] if limit else members:
        click.echo(person)
    errors.print(f"{len(members):,} persons")


@cohorts_group.command(name="delete")
@click.argument("cohort_id")
@click.pass_obj
def cohorts_delete(obj: Any, cohort_id: str) -> None:
    """Delete a cohort and its member rows."""
    from footfall.api.local import call_server, running_server
    from footfall.store.database import Database

    server = running_server(obj.data_dir)
    if server is not None:
        call_server(server, f"/v1/cohorts/{cohort_id}", method="DELETE")
    else:
        with Database.open(obj.data_dir) as database:
            SegmentCatalog(obj.data_dir).delete_cohort(database, cohort_id)
    console.print(f"deleted cohort {cohort_id!r}")
