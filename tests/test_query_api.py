"""Analyses through their three doors: the Python API, the HTTP query API and
the CLI take the same spec and give the same answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from footfall import analytics
from footfall.analytics.errors import SpecError
from footfall.analytics.wire import spec_from_json, to_json
from footfall.api.openapi import FUNNEL_REQUEST, QUERY_REQUESTS, document
from footfall.cli import cli
from footfall.config import init_data_dir
from footfall.pipeline import Pipeline
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database

from .live import LiveServer, running

SPEC = {
    "steps": ["view_product", {"event": "add_to_cart", "filters": [{"field": "properties.price", "op": "gte", "value": 5}]}, "purchase"],
    "window": "1d",
    "breakdown": "properties.category",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("query-store")
    init_data_dir(path)
    with Database.open(path) as database:
        pipeline = Pipeline(database)
        for table in Simulation(SimulationSpec(users=150, days=10, seed=5)).batches():
            pipeline.ingest(table)
    return path


@pytest.fixture(scope="module")
def expected(data_dir: Path) -> dict[str, Any]:
    with Database.open(data_dir) as database:
        result = analytics.run(database, spec_from_json("funnel", SPEC))
    assert result.overall.entered > 20
    assert result.overall.converted > 0
    assert len(result.groups) > 2
    return to_json(result)  # type: ignore[no-any-return]


ENGAGEMENT = {"as_of": "2026-01-08T00:00:00+00:00", "window": "7d", "half_life": None, "limit": 5}


@pytest.fixture(scope="module")
def engagement_expected(data_dir: Path) -> dict[str, Any]:
    with Database.open(data_dir) as database:
        result = analytics.run(database, spec_from_json("engagement", ENGAGEMENT))
    assert result.persons > 10
    return to_json(result)  # type: ignore[no-any-return]


RETENTION = {"start_event": "view_product", "return_event": {"event": "purchase"}, "period": "day", "periods": 5,
             "from": "2026-01-01", "to": "2026-01-08"}


@pytest.fixture(scope="module")
def retention_expected(data_dir: Path) -> dict[str, Any]:
    with Database.open(data_dir) as database:
        result = analytics.run(database, spec_from_json("retention", RETENTION))
    assert result.overall.size > 10
    return to_json(result)  # type: ignore[no-any-return]


KPIS = {"from": "2026-01-02", "to": "2026-01-09", "conversion_event": "purchase", "features": ["search"]}


@pytest.fixture(scope="module")
def kpis_expected(data_dir: Path) -> dict[str, Any]:
    with Database.open(data_dir) as database:
        result = analytics.run(database, spec_from_json("kpis", KPIS))
    assert result.sessions > 10
    return to_json(result)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def server(
    data_dir: Path, expected: dict[str, Any], engagement_expected: dict[str, Any], kpis_expected: dict[str, Any],
    retention_expected: dict[str, Any],
) -> Iterator[LiveServer]:
    with running(data_dir) as live:
        yield live


def post(server: LiveServer, path: str, body: bytes, key: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(server.url + path, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_http_api_answers_as_the_python_api(server: LiveServer, expected: dict[str, Any]) -> None:
    status, body = post(server, "/v1/query/funnel", json.dumps(SPEC).encode(), server.secret_key)
    assert status == 200
    assert body["result"] == expected
    status, body = post(server, "/v1/query/funnel?explain=true", json.dumps(SPEC).encode(), server.secret_key)
    assert status == 200
    assert body["sql"].lstrip().startswith("WITH")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"steps": ["view_product"]}, "steps"),
        ({"steps": ["a", "b"], "window": "soon"}, "window"),
        ({"steps": ["a", {"event": "b", "filters": [{"field": "properties.x", "op": "like", "value": 1}]}]}, "steps[1].filters[0].op"),
        ({"steps": ["a", "b"], "from": "2026-13-01", "to": "2026-02-01"}, "from"),
        ({"steps": ["a", "b"], "colour": "red"}, "colour"),
        ({"steps": ["a", "b"], "exclusions": [{"event": "c", "from_step": 1, "to_step": 1}]}, "exclusions[0].to_step"),
        ({"steps": ["view_product", "no_such_event"]}, "steps[1].event"),
    ],
)
def test_a_bad_spec_is_a_400_naming_the_field(server: LiveServer, body: dict[str, Any], field: str) -> None:
    status, answer = post(server, "/v1/query/funnel", json.dumps(body).encode(), server.secret_key)
    assert status == 400, answer
    assert answer["error"]["code"] == "bad_spec"
    assert answer["error"]["field"] == field


def test_the_query_api_needs_a_secret_key_and_json(server: LiveServer) -> None:
    assert post(server, "/v1/query/funnel", json.dumps(SPEC).encode(), None)[0] == 401
    assert post(server, "/v1/query/funnel", json.dumps(SPEC).encode(), server.write_key)[0] == 401
    status, answer = post(server, "/v1/query/funnel", b"{not json", server.secret_key)
    assert (status, answer["error"]["code"]) == (400, "bad_request")
    status, answer = post(server, "/v1/query/trend_lines", b"{}", server.secret_key)
    assert (status, answer["error"]["field"]) == (400, "analysis")


def test_the_openapi_document_describes_the_query_api(server: LiveServer) -> None:
    with urllib.request.urlopen(f"{server.url}/v1/openapi.json", timeout=10) as response:
        served = json.loads(response.read())
    assert served == json.loads(json.dumps(document()))
    assert {"/v1/query/funnel", "/v1/profiles/{identity}", "/v1/batch", "/v1/sql"} <= set(served["paths"])
    examples = {"funnel": [SPEC], "engagement": [ENGAGEMENT], "kpis": [KPIS], "trend": [], "stickiness": [], "lifecycle": [],
                "retention": [RETENTION], "paths": [], "heatmap": []}
    for name, request in QUERY_REQUESTS.items():
        assert f"/v1/query/{name}" in served["paths"]
        jsonschema.Draft202012Validator.check_schema(request)
        validator = jsonschema.Draft202012Validator(request)
        for example in [*request["examples"], *examples[name]]:
            validator.validate(example)
            spec_from_json(name, example)  # what the schema admits, the decoder takes
        for wrong in ({"colour": "red"}, {"from": 7}):
            assert not validator.is_valid(wrong)
            with pytest.raises(SpecError):
                spec_from_json(name, wrong)
    funnel = jsonschema.Draft202012Validator(FUNNEL_REQUEST)
    for wrong in ({"steps": ["a"]}, {"steps": ["a", "b"], "mode": "loose"}):
        assert not funnel.is_valid(wrong)
        with pytest.raises(SpecError):
            spec_from_json("funnel", wrong)


def test_the_cli_prints_tables_json_and_sql(data_dir: Path, expected: dict[str, Any], tmp_path: Path) -> None:
    runner = CliRunner()
    flags = ["--data-dir", str(data_dir), "query", "funnel", "--steps", "view_product,add_to_cart,purchase", "--window", "1d",
             "--breakdown", "properties.category"]
    table = runner.invoke(cli, flags)
    assert table.exit_code == 0, table.output
    assert "view_product" in table.output
    assert f"{expected['overall']['steps'][0]['count']:,}" in table.output
    assert "by properties.category" in table.output
    spec_file = tmp_path / "funnel.json"
    spec_file.write_text(json.dumps(SPEC))
    as_json = runner.invoke(cli, ["--data-dir", str(data_dir), "query", "funnel", "--spec", str(spec_file), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == expected
    explain = runner.invoke(cli, [*flags, "--explain"])
    assert explain.exit_code == 0
    assert "FROM events" in explain.output


def test_cli_flags_map_onto_the_spec(data_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, [
        "--data-dir", str(data_dir), "query", "funnel", "--steps", "view_product,purchase", "--mode", "strict",
        "--where", "properties.category:in:shoes|bags", "--exclude", "search:0:1", "--from", "2026-01-01",
        "--to", "2026-01-08", "--tz", "Europe/Berlin", "--reference", "previous", "--json",
    ])
    assert result.exit_code == 0, result.output
    spec = json.loads(result.output)["spec"]
    assert spec["mode"] == "strict"
    assert spec["filters"] == [{"field": "properties.category", "op": "in", "value": ["shoes", "bags"]}]
    assert spec["exclusions"][0]["event"] == "search"
    assert (spec["date_range"], spec["time_zone"], spec["step_reference"]) == (
        {"start": "2026-01-01", "end": "2026-01-08"}, "Europe/Berlin", "previous")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--window", "1h"], "--steps"),
        (["--steps", "a,b", "--where", "price"], "FIELD:OP"),
        (["--steps", "a,b", "--exclude", "x:1"], "EVENT:FROM_STEP:TO_STEP"),
        (["--steps", "a,b", "--spec", "x.json"], "not both"),
        (["--spec", "missing.json"], "cannot read"),
    ],
)
def test_cli_mistakes_are_one_line_errors_naming_what_to_fix(
    data_dir: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from footfall.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--data-dir", str(data_dir), "query", "funnel", *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    assert len(error.strip().splitlines()) == 1



def test_engagement_through_the_http_api_and_the_cli(
    data_dir: Path, server: LiveServer, engagement_expected: dict[str, Any]
) -> None:
    status, body = post(server, "/v1/query/engagement", json.dumps(ENGAGEMENT).encode(), server.secret_key)
    assert status == 200
    assert body["result"] == engagement_expected
    status, body = post(server, "/v1/query/engagement", json.dumps({**ENGAGEMENT, "bands": [0.9, 0.1]}).encode(), server.secret_key)
    assert (status, body["error"]["field"]) == (400, "bands")
    # The CLI, while the server holds the store, reads through it.
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "query", "engagement", "--as-of", ENGAGEMENT["as_of"],
                                      "--window", "7d", "--half-life", "none", "--limit", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == engagement_expected


def test_kpis_through_the_http_api_and_the_cli(data_dir: Path, server: LiveServer, kpis_expected: dict[str, Any]) -> None:
    status, body = post(server, "/v1/query/kpis", json.dumps(KPIS).encode(), server.secret_key)
    assert status == 200
    assert body["result"] == kpis_expected
    status, body = post(server, "/v1/query/kpis", json.dumps({"to": "2026-01-09"}).encode(), server.secret_key)
    assert (status, body["error"]["field"]) == (400, "from")
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "query", "kpis", "--from", "2026-01-02", "--to", "2026-01-09",
                                      "--conversion", "purchase", "--feature", "search", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == kpis_expected


def test_trends_stickiness_and_lifecycle_over_http(server: LiveServer) -> None:
    document = {"from": "2026-01-02", "to": "2026-01-09", "event": "page_view", "measure": "persons"}
    status, body = post(server, "/v1/query/trend", json.dumps(document).encode(), server.secret_key)
    assert status == 200
    [series] = body["result"]["series"]
    assert len(series["points"]) == 7
    assert sum(point["value"] for point in series["points"]) > 0
    status, sticky = post(server, "/v1/query/stickiness", json.dumps(document).encode(), server.secret_key)
    assert status == 200
    assert sum(sticky["result"].values()) > 0
    status, cycle = post(server, "/v1/query/lifecycle", json.dumps(document).encode(), server.secret_key)
    assert status == 200
    assert [point["bucket"][:10] for point in cycle["result"]][:2] == ["2026-01-02", "2026-01-03"]
    status, body = post(server, "/v1/query/trend", json.dumps({**document, "measure": "sum"}).encode(), server.secret_key)
    assert (status, body["error"]["field"]) == (400, "property")


@pytest.mark.parametrize(
    ("analysis", "body", "field", "words"),
    [
        ("trend", {"from": "2026-01-02", "to": "2026-01-09", "event": "purchse"}, "event", "did you mean 'purchase'"),
        ("trend", {"from": "2026-01-02", "to": "2026-01-09", "measure": "sum", "property": "revenu"}, "property", "properties.revenu"),
        ("trend", {"from": "2026-01-02", "to": "2026-01-09", "filters": [{"field": "properties.colour", "op": "eq", "value": "red"}]},
         "filters[0].field", "no stored event has the property"),
        ("kpis", {"from": "2026-01-02", "to": "2026-01-09", "features": ["serach"]}, "features[0]", "did you mean 'search'"),
        ("funnel", {"steps": ["view_product", "purchase"], "window": "0s"}, "window", ""),
        ("funnel", {"steps": [f"s{i}" for i in range(21)]}, "steps", "2 to 20"),
        ("funnel", {"steps": ["view_product", "purchase"], "filters": [{"field": "path", "op": "regex", "value": "(?<=a)b"}]},
         "filters[0].value", "lookaround"),
        ("funnel", {"steps": ["view_product", {"event": "purchase", "filters": [{"field": "properties.colour", "op": "eq", "value": "red"}]}]},
         "steps[1].filters[0].field", "no stored event has the property"),
        ("funnel", {"steps": ["view_product", "purchase"], "breakdown": "properties.colour"}, "breakdown", "properties.colour"),
        ("funnel", {"steps": ["view_product", "purchse"]}, "steps[1].event", "did you mean 'purchase'"),
        ("retention", {"start_event": "view_product", "return_event": {"event": "purchase", "filters": [
            {"field": "properties.colour", "op": "eq", "value": "red"}]}}, "return_event.filters[0].field", "no stored event has the property"),
        ("retention", {"start_event": "view_prodct"}, "start_event.event", "did you mean 'view_product'"),
    ],
)
def test_bad_names_and_values_are_400s_naming_the_field(
    server: LiveServer, analysis: str, body: dict[str, Any], field: str, words: str
) -> None:
    status, answer = post(server, f"/v1/query/{analysis}", json.dumps(body).encode(), server.secret_key)
    assert status == 400, answer
    assert answer["error"]["field"] == field
    assert words in answer["error"]["message"]


def test_retention_through_the_http_api_and_the_cli(data_dir: Path, server: LiveServer, retention_expected: dict[str, Any]) -> None:
    status, body = post(server, "/v1/query/retention", json.dumps(RETENTION).encode(), server.secret_key)
    assert status == 200
    assert body["result"] == retention_expected
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "query", "retention", "--start", "view_product",
                                      "--return", "purchase", "--period", "day", "--periods", "5", "--from", "2026-01-01",
                                      "--to", "2026-01-08", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == retention_expected
    table = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "query", "retention", "--start", "view_product", "--period", "day",
                                     "--periods", "3", "--from", "2026-01-01", "--to", "2026-01-08"])
    assert table.exit_code == 0, table.output
    assert "2026-01-01" in table.output
    status, body = post(server, "/v1/query/retention", json.dumps({**RETENTION, "periods": 0}).encode(), server.secret_key)
    assert (status, body["error"]["field"]) == (400, "periods")
