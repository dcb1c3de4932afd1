"""Project configuration: defaults, validation that names the key, data directory."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from footfall.config import (
    DEFAULT_CONFIG_TEXT,
    ProjectConfig,
    init_data_dir,
    load_config,
    parse_config,
    resolve_data_dir,
)
from footfall.durations import format_duration, parse_duration
from footfall.errors import ConfigError


def test_default_file_parses_to_the_defaults() -> None:
    assert parse_config(DEFAULT_CONFIG_TEXT) == ProjectConfig()
    assert ProjectConfig().sessions.gap == timedelta(minutes=30)


def test_partial_file_keeps_other_defaults() -> None:
    config = parse_config('[sessions]\ninactivity_gap = "45m"\n[engagement.weights]\nsearch = 2\n')
    assert config.sessions.gap == timedelta(minutes=45)
    assert config.engagement.weights == {"search": 2.0}
    assert config.intake == ProjectConfig().intake


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[sessions]\ninactivity_gapp = "1m"', "unknown key 'sessions.inactivity_gapp'"),
        ("colour = 1", "unknown key 'colour'"),
        ('[sessions]\ninactivity_gap = "soon"', "in [sessions]: inactivity_gap: bad duration 'soon'"),
        ('[sessions]\ninactivity_gap = "0s"', "inactivity_gap: must be greater than zero"),
        ('[store]\nbackend = "postgres"', "backend must be 'duckdb' or 'clickhouse'"),
        ('[store]\nbackend = "clickhouse"', "needs clickhouse_dsn"),
        ("[intake]\nmax_batch_bytes = -5", "max_batch_bytes: must be a positive"),
        ("[intake]\nunpack_processes = -1", "unpack_processes: must be 0 (none) to 64; got -1"),
        ('[engagement.weights]\nclick = "lots"', "Expected `float`, got `str`".replace("`", "")),
        ("[engagement]\npassive_weight = 3", "passive_weight: must be between 0 and 1"),
        ('project_id = "has space"', "project_id"),
        ("this is = not toml", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "footfall.toml")
    assert str(caught.value).startswith("footfall.toml")
    assert message.lower() in str(caught.value).replace("`", "").lower()


def test_data_dir_from_argument_env_or_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FOOTFALL_DATA_DIR", raising=False)
    assert resolve_data_dir() == tmp_path / "footfall-data"
    monkeypatch.setenv("FOOTFALL_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_init_writes_a_commented_config_once(tmp_path: Path) -> None:
    init_data_dir(tmp_path)
    path = tmp_path / "footfall.toml"
    assert path.read_text() == DEFAULT_CONFIG_TEXT
    path.write_text('[sessions]\ninactivity_gap = "10m"\n')
    init_data_dir(tmp_path)
    assert load_config(tmp_path).sessions.gap == timedelta(minutes=10)


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("1h30m", 5400), ("7d", 604800), ("250ms", 0.25), ("2w", 1209600)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["", "10", "m", "10 minutes", "-5m", "1.5.2h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)
