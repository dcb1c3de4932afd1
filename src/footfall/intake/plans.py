"""Tracking plans: per event name, a JSON Schema its properties must meet.

A plan is a JSON file in the data directory's ``plans/`` folder::

    {
      "name": "shop",
      "mode": "block",                 # allow | warn | block
      "sources": ["web"],              # optional: the sources it covers (default: all)
      "unplanned_events": "allow",     # what to do with events the plan does not name
      "events": {
        "purchase": {"type": "object", "required": ["revenue"],
                     "properties": {"revenue": {"type": "number", "minimum": 0}}}
      }
    }

``allow`` accepts everything (the plan documents); ``warn`` accepts and records
the violation in ``plan_warnings``; ``block`` sends the message to the
dead-letter table, from which ``footfall dlq replay`` retries it once the plan
or the sender is fixed. The worker re-reads the folder within a second of a
change.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jsonschema
import msgspec

from footfall.errors import FootfallError

PLANS_DIR = "plans"
Mode = Literal["allow", "warn", "block"]
_MODES = ("allow", "warn", "block")
_PLAN_NAME = re.compile(r"[A-Za-z0-9_\-.]{1,64}")


class PlanError(FootfallError):
    code = "bad_plan"


class Violation(NamedTuple):
    plan: str
    mode: Mode  # "warn" or "block"
    field: str  # JSON path in the message, e.g. $.properties.revenue
    reason: str


class Plan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    events: dict[str, dict[str, Any]]
    mode: Mode = "warn"
    sources: list[str] | None = None
    unplanned_events: Mode = "allow"


class CompiledPlan:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.validators = {
            event: jsonschema.Draft202012Validator(schema) for event, schema in plan.events.items()
        }

    def covers(self, source: str) -> bool:
        return self.plan.sources is None or source in self.plan.sources

    def check(self, event: str, properties: Mapping[str, Any]) -> Violation | None:
        plan = self.plan
        validator = self.validators.get(event)
        if validator is None:
            if plan.unplanned_events == "allow":
                return None
            return Violation(
                plan.name, plan.unplanned_events, "$.event", f"event {event!r} is not in tracking plan {plan.name!r}"
            )
        if plan.mode == "allow":
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(properties))
        if error is None:
            return None
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
        return Violation(plan.name, plan.mode, f"$.properties{path}", f"{error.message} (tracking plan {plan.name!r})")


def parse_plan(text: str | bytes, source: str = "plan") -> Plan:
    """A plan from JSON, with every schema checked; errors name the part at fault."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise PlanError(f"{source}: not valid JSON ({exc})") from None
    try:
        plan = msgspec.convert(raw, Plan)
    except msgspec.ValidationError as exc:
        raise PlanError(f"{source}: {exc}; a plan needs 'name' and 'events', mode one of {', '.join(_MODES)}") from None
    if not _PLAN_NAME.fullmatch(plan.name):
        raise PlanError(f"{source}: name {plan.name!r}: use 1-64 letters, digits, '-', '_' or '.'")
    for event, schema in plan.events.items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(part) for part in exc.absolute_path) or "(top)"
            raise PlanError(f"{source}: the schema for event {event!r} is not valid JSON Schema at {where}: {exc.message}") from None
    return plan


class PlanBook:
    """The plans of one data directory, re-read when the folder changes. Thread-safe."""

    def __init__(self, data_dir: Path | None, *, refresh_every: float = 1.0) -> None:
        self.directory = Path(data_dir) / PLANS_DIR if data_dir is not None else None
        # Looking at the folder costs a listing and a stat per file: at most
        # this often, not per message. A change takes effect within this time.
        self.refresh_every = refresh_every
        self._checked_at = -math.inf
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, int], ...] | None = None
        self._plans: list[CompiledPlan] = []
        self.load_error: str | None = None  # the last file that failed to load, kept out of force

    @classmethod
    def of(cls, plans: Iterable[Plan]) -> PlanBook:
        """A fixed book (no folder), for tests and embedding."""
        book = cls(None)
        book._plans = [CompiledPlan(plan) for plan in plans]
        return book

    def _files(self) -> list[Path]:
        if self.directory is None or not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.json"))

    def plans(self) -> list[CompiledPlan]:
        with self._lock:
            now = time.monotonic()
            if self.directory is None or now - self._checked_at < self.refresh_every:
                return self._plans
            self._checked_at = now
            files = self._files()
            stamp = tuple((file.name, file.stat().st_mtime_ns) for file in files)
            if stamp != self._stamp:
                plans, error = [], None
                for file in files:
                    try:
                        plans.append(CompiledPlan(parse_plan(file.read_bytes(), str(file))))
                    except (PlanError, OSError) as exc:
                        # A broken file must not take the worker down; the
                        # plans that load stay in force and the error is shown
                        # by `footfall plans list` and /metrics.
                        error = str(exc)
                self._plans, self.load_error, self._stamp = plans, error, stamp
            return self._plans

    def refresh(self) -> None:
        """Look at the folder on the next use, however recently it was looked at."""
        self._checked_at = -math.inf

    def check(self, source: str, event: str, properties: Mapping[str, Any]) -> list[Violation]:
        checker = self.checker(source)
        return checker(event, properties) if checker is not None else []

    def checker(self, source: str) -> Callable[[str, Mapping[str, Any]], list[Violation]] | None:
        """A check for many messages of one source (None: no plan covers it),
        so the folder is looked at once, not per message."""
        covering = [plan for plan in self.plans() if plan.covers(source)]
        if not covering:
            return None

        def check(event: str, properties: Mapping[str, Any]) -> list[Violation]:
            return [violation for plan in covering if (violation := plan.check(event, properties)) is not None]

        return check

    # -- management (the CLI) -------------------------------------------------

    def save(self, text: str | bytes, source: str) -> Plan:
        if self.directory is None:
            raise PlanError("this plan book has no folder")
        plan = parse_plan(text, source)
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{plan.name}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_bytes(msgspec.json.format(msgspec.json.encode(plan)))
        os.replace(temporary, target)
        self.refresh()
        return plan

    def remove(self, name: str) -> None:
        if self.directory is None or not (self.directory / f"{name}.json").exists():
            raise PlanError(f"no tracking plan named {name!r}; `footfall plans list` shows them")
        (self.directory / f"{name}.json").unlink()
        self.refresh()
