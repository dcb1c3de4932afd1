"""Project configuration: ``footfall.toml`` in the data directory.

Settings have defaults; a file only needs the keys a project changes. Unknown
keys and bad values are errors that name the key, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path

import msgspec

from footfall.durations import parse_duration
from footfall.errors import ConfigError

CONFIG_FILE = "footfall.toml"
DEFAULT_DATA_DIR = "footfall-data"
DATA_DIR_ENV = "FOOTFALL_DATA_DIR"


def _positive_duration(value: str, key: str) -> timedelta:
    try:
        parsed = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    if parsed <= timedelta(0):
        raise ValueError(f"{key}: must be greater than zero, got {value!r}")
    return parsed


class StoreSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    backend: str = "duckdb"
    # For backend = "clickhouse": clickhouse://user:password@host:8123/database,
    # or chdb:///path/to/dir for the in-process engine.
    clickhouse_dsn: str = ""

    def __post_init__(self) -> None:
        if self.backend not in ("duckdb", "clickhouse"):
            raise ValueError(f"backend must be 'duckdb' or 'clickhouse', got {self.backend!r}")
        if self.backend == "clickhouse" and not self.clickhouse_dsn:
            raise ValueError("backend 'clickhouse' needs clickhouse_dsn, e.g. 'clickhouse://localhost:8123/footfall'")


class SessionSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    inactivity_gap: str = "30m"

    def __post_init__(self) -> None:
        _positive_duration(self.inactivity_gap, "inactivity_gap")

    @property
    def gap(self) -> timedelta:
        return parse_duration(self.inactivity_gap)


def _default_unpack_processes() -> int:
    """Two helpers where there is a core to spare, none on one core."""
    return 2 if (os.cpu_count() or 1) > 1 else 0


class IntakeSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    dedup_window: str = "7d"
    max_message_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    # Under load, processes that normalise the next records while the worker
    # stores the current ones (0: the worker does both, as suits one core).
    unpack_processes: int = msgspec.field(default_factory=_default_unpack_processes)

    def __post_init__(self) -> None:
        _positive_duration(self.dedup_window, "dedup_window")
        if not 0 <= self.unpack_processes <= 64:
            raise ValueError(f"unpack_processes: must be 0 (none) to 64; got {self.unpack_processes}")
        for key in ("max_message_bytes", "max_batch_bytes"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be a positive number of bytes")


def _default_weights() -> dict[str, float]:
    return {"page_view": 1.0, "click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}


class EngagementSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    window: str = "30d"
    # Passive signals (views, scrolls, dwell, hovers) count this fraction of an
    # active one (clicks, submits, carts, purchases).
    passive_weight: float = 0.5
    # Empty: no decay. Otherwise an event this old counts half.
    recency_half_life: str = ""
    weights: dict[str, float] = msgspec.field(default_factory=_default_weights)

    def __post_init__(self) -> None:
        _positive_duration(self.window, "window")
        if self.recency_half_life:
            _positive_duration(self.recency_half_life, "recency_half_life")
        if not 0 <= self.passive_weight <= 1:
            raise ValueError("passive_weight: must be between 0 and 1")


class ProfileSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Rolling windows for per-event counts, in whole hours (see footfall.profiles).
    windows: list[str] = msgspec.field(default_factory=lambda: ["1d", "7d", "30d"])
    # Event properties whose latest value each profile keeps.
    properties: list[str] = msgspec.field(default_factory=list)
    # The event property summed into a profile's revenue.
    revenue_property: str = "revenue"
    # Where profiles are kept: "embedded" (in the worker's memory, rebuilt from
    # the store on start) or "redis" (shared with every reader; docs/profiles.md).
    backend: str = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"

    def __post_init__(self) -> None:
        if self.backend not in ("embedded", "redis"):
            raise ValueError(f"backend must be 'embedded' or 'redis', got {self.backend!r}")
        if self.backend == "redis" and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"redis_url: {self.redis_url!r} is not a Redis URL; use e.g. 'redis://127.0.0.1:6379/0'"
                " (rediss:// for TLS, unix:///path/to/redis.sock)"
            )
        if not self.windows:
            raise ValueError("windows: give at least one window, e.g. [\"7d\"]")
        for window in self.windows:
            length = _positive_duration(window, "windows")
            if length % timedelta(hours=1) or length > timedelta(days=400):
                raise ValueError(f"windows: {window!r} must be whole hours, up to 400 days (e.g. '36h', '7d')")
        if len(set(self.windows)) < len(self.windows):
            raise ValueError("windows: a window is listed twice")
        for key in [*self.properties, self.revenue_property]:
            if not re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$\-]{0,63}", key):
                raise ValueError(
                    f"properties / revenue_property: {key!r} is not a property name footfall can track;"
                    " use a top-level key of letters, digits, '_', '$' or '-'"
                )

    @property
    def durations(self) -> dict[str, timedelta]:
        return {window: parse_duration(window) for window in self.windows}


class SegmentSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # A segment previewed with fewer members gets a warning (rates on it are noisy).
    min_members: int = 50

    def __post_init__(self) -> None:
        if self.min_members < 0:
            raise ValueError("min_members: give 0 (no warning) or more")


class PrivacySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Zero the last octet of IPv4 addresses (the last 80 bits of IPv6) before storing.
    anonymize_ip: bool = False


class ProjectConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    project_id: str = "default"
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    sessions: SessionSettings = msgspec.field(default_factory=SessionSettings)
    intake: IntakeSettings = msgspec.field(default_factory=IntakeSettings)
    engagement: EngagementSettings = msgspec.field(default_factory=EngagementSettings)
    privacy: PrivacySettings = msgspec.field(default_factory=PrivacySettings)
    profiles: ProfileSettings = msgspec.field(default_factory=ProfileSettings)
    segments: SegmentSettings = msgspec.field(default_factory=SegmentSettings)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", self.project_id):
            raise ValueError("project_id: use 1-64 letters, digits, '-' or '_'")


DEFAULT_CONFIG_TEXT = """\
# Footfall project settings. Every key is optional; the values below are the defaults.
project_id = "default"

[store]
backend = "duckdb"          # "duckdb" (embedded, one file here) or "clickhouse"
clickhouse_dsn = ""         # e.g. "clickhouse://localhost:8123/footfall"

[sessions]
inactivity_gap = "30m"      # a new session starts after this much inactivity

[intake]
dedup_window = "7d"         # retries with the same messageId are dropped for this long
max_message_bytes = 32768
max_batch_bytes = 512000
# unpack_processes = 2      # under load, processes that normalise messages while the worker stores
                            # (default 2, or 0 on one core)

[privacy]
anonymize_ip = false        # zero the last octet of IPs (per-source settings: `footfall keys create`)

[engagement]
window = "30d"
passive_weight = 0.5        # passive signals count this fraction of active ones
recency_half_life = ""      # e.g. "14d"; empty means no decay

[engagement.weights]
page_view = 1.0
click = 1.0
add_to_cart = 3.0
purchase = 5.0

[profiles]
windows = ["1d", "7d", "30d"]   # rolling windows of the live per-event counts, in whole hours
properties = []                 # event properties whose latest value a profile keeps, e.g. ["plan"]
revenue_property = "revenue"    # summed into a profile's revenue
backend = "embedded"            # or "redis": profiles kept in Redis, read by every API process
redis_url = "redis://127.0.0.1:6379/0"  # for backend = "redis"

[segments]
min_members = 50                # a segment previewed with fewer members gets a warning
"""


def _describe(error: msgspec.ValidationError, source: str) -> str:
    text = str(error)
    unknown = re.match(r"Object contains unknown field `(.+?)`(?: - at `\$\.?(.*)`)?", text)
    if unknown:
        key = ".".join(filter(None, [unknown.group(2), unknown.group(1)]))
        return f"{source}: unknown key '{key}'; check its spelling (see footfall.toml's comments for the keys)"
    at = re.search(r" - at `\$\.?(.*)`$", text)
    where = f" in [{at.group(1)}]" if at and at.group(1) else ""
    problem = text[: at.start()] if at else text
    return f"{source}{where}: {problem}"


def parse_config(text: str, source: str = CONFIG_FILE) -> ProjectConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    try:
        return msgspec.convert(raw, ProjectConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: the argument, else $FOOTFALL_DATA_DIR, else ./footfall-data."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


def load_config(data_dir: Path) -> ProjectConfig:
    """Read ``footfall.toml`` from a data directory (defaults when it has none)."""
    path = data_dir / CONFIG_FILE
    if not path.exists():
        return ProjectConfig()
    return parse_config(path.read_text(encoding="utf-8"), str(path))


def init_data_dir(data_dir: Path) -> ProjectConfig:
    """Create the data directory with a commented default config if missing."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CONFIG_FILE
    if not path.exists():
        path.write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
    return load_config(data_dir)
