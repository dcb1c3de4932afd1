"""Live profiles over a database: loaded from the stored events, then kept up
to date by the pipeline with each batch it stores.

The profiles are derived from the store, which is what persists them: a
restarted worker loads them again (a few grouped queries), and a batch the
store did not take never reaches them. The load and the incremental updates
follow one definition (``footfall.profiles.state``), and the tests check they
agree on both backends.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from footfall.events.record import SYSTEM_EVENTS
from footfall.profiles.state import HOUR_MS, Profile, ProfileBook, ProfileView, StoredEvent, hour_of
from footfall.store.database import Database

# How often, in stored batches, hours outside every window are dropped.
_FORGET_EVERY = 500
# Batches of at most this many events are recorded event by event.
_ROW_BY_ROW = 32


def _json_sql(dialect: str) -> dict[str, str]:
    """SQL templates over ``properties`` for a key ``{key}`` (a plain name)."""
    if dialect == "clickhouse":
        return {
            "ms": "toUnixTimestamp64Milli(timestamp)",
            "number": "if(JSONType(properties, '{key}') IN ('Int64', 'UInt64', 'Double'), JSONExtractFloat(properties, '{key}'), 0)",
            "passive": "JSONExtractString(properties, 'signal') = 'passive'",
            "raw": "JSONExtractRaw(properties, '{key}')",
            "present": "JSONHas(properties, '{key}') AND JSONType(properties, '{key}') != 'Null'",
            "hour": "intDiv(toUnixTimestamp64Milli(timestamp), 3600000) * 3600000",
            "distinct_sessions": "uniqExact(session_id)",
            "latest": "argMaxIf({value}, (toUnixTimestamp64Milli(timestamp), event_id), {condition})",
        }
    return {
        "ms": "epoch_ms(timestamp)",
        "number": "CASE WHEN json_type(properties, '$.\"{key}\"') IN ('BIGINT', 'UBIGINT', 'DOUBLE')"
        " THEN CAST(json_extract(properties, '$.\"{key}\"') AS DOUBLE) ELSE 0 END",
        "passive": "coalesce(json_extract_string(properties, '$.signal') = 'passive', false)",
        "raw": "CAST(json_extract(properties, '$.\"{key}\"') AS VARCHAR)",
        "present": "coalesce(json_type(properties, '$.\"{key}\"') NOT IN ('NULL'), false)",
        "hour": "(epoch_ms(timestamp) // 3600000) * 3600000",
        "distinct_sessions": "count(DISTINCT session_id)",
        "latest": "arg_max({value}, (epoch_ms(timestamp), event_id)) FILTER (WHERE {condition})",
    }


class LiveProfiles:
    """The profiles of one database's persons; thread-safe."""

    def __init__(self, database: Database) -> None:
        self.database = database
        config = database.config
        self.book = ProfileBook(config.profiles, config.engagement)
        self._lock = threading.Lock()
        self._batches = 0
        self.loaded = False

    # -- from the store ---------------------------------------------------------------

    def load(self, now: datetime | None = None) -> LiveProfiles:
        """(Re)build every profile from the stored events."""
        moment = now or datetime.now(UTC)
        book = ProfileBook(self.database.config.profiles, self.database.config.engagement)
        sql = _json_sql(self.database.backend.dialect)
        events = "events"  # a plain table on both engines: one row per stored event
        quote = self.database.backend.quote
        system = ", ".join(quote(name) for name in SYSTEM_EVENTS)
        # The events a person did: not the membership changes Footfall writes.
        project = f"project_id = {quote(self.database.project_id)} AND event NOT IN ({system})"
        revenue = sql["number"].format(key=self.database.config.profiles.revenue_property)
        lifetime = self.database.query_arrow(
            f"SELECT person_id, min({sql['ms']}) AS first_ms, max({sql['ms']}) AS last_ms, count(*) AS events,"
            f" sum({revenue}) AS revenue FROM {events} WHERE {project} GROUP BY person_id"
        ).to_pylist()
        for row in lifetime:
            book.profiles[row["person_id"]] = Profile(
                row["person_id"], int(row["first_ms"]), int(row["last_ms"]), events=int(row["events"]), revenue=float(row["revenue"])
            )
        sessions = self.database.query_arrow(
            f"SELECT DISTINCT person_id, session_id FROM {events} WHERE {project}"
        )
        for person, session in zip(sessions["person_id"].to_pylist(), sessions["session_id"].to_pylist(), strict=True):
            book.profiles[person].sessions.add(session)
        since = hour_of(int(moment.timestamp() * 1000)) - book.keep_ms
        hours = self.database.query_arrow(
            f"SELECT person_id, event, {sql['hour']} AS hour, {sql['passive']} AS passive, count(*) AS n"
            f" FROM {events} WHERE {project} AND {sql['ms']} >= {since} GROUP BY person_id, event, hour, passive"
        ).to_pylist()
        for row in hours:
            profile = book.profiles[row["person_id"]]
            hour, count = int(row["hour"]), int(row["n"])
            counts = profile.counts.setdefault(row["event"], {})
            counts[hour] = counts.get(hour, 0) + count
            weight = book.weights.weight(row["event"], bool(row["passive"])) * count
            if weight:
                profile.engagement[hour] = profile.engagement.get(hour, 0.0) + weight
        for key in self.database.config.profiles.properties:
            value = sql["raw"].format(key=key)
            condition = sql["present"].format(key=key)
            latest = sql["latest"].format(value=f"({sql['ms']}, event_id, {value})", condition=condition)
            rows = self.database.query_arrow(
                f"SELECT person_id, {latest} AS latest FROM {events} WHERE {project} AND {condition} GROUP BY person_id"
            ).to_pylist()
            for row in rows:
                latest_value = row["latest"]
                when, event_id, raw = latest_value.values() if isinstance(latest_value, dict) else latest_value
                book.profiles[row["person_id"]].last_values[key] = (int(when), event_id, msgspec.json.decode(raw))
        for row in self.database.persons_arrow().select(["person_id", "user_id", "traits"]).to_pylist():
            book.set_person(row["person_id"], row["user_id"], msgspec.json.decode(row["traits"]))
        with self._lock:
            self.book = book
            self.loaded = True
        return self

    # -- from the pipeline ------------------------------------------------------------

    def record(self, events: pa.Table, persons: pa.Table, merges: Sequence[tuple[str, str]]) -> None:
        """Apply a batch the store has just taken: merges first, then its events
        (with their resolved persons and sessions), then the persons' rows.

        The same as ``ProfileBook.apply`` per event, done by groups: the
        properties are decoded only where they may hold what a profile reads.
        A small batch (the live server's usual one at low traffic) goes event
        by event instead: grouping has a fixed cost that would dominate it."""
        if events.num_rows <= _ROW_BY_ROW:
            self._record_rows(events, persons, merges)
            return
        book = self.book
        settings = book.settings
        people = events["person_id"]
        stamps = events["timestamp"].cast(pa.int64())
        texts = events["properties"]
        passive = self._passive(events["event"], texts, set(book.weights.by_event))
        by_person = pa.table({"p": people, "t": stamps}).group_by("p", use_threads=False).aggregate(
            [("t", "min"), ("t", "max"), ([], "count_all")]
        )
        sessions = pa.table({"p": people, "s": events["session_id"]}).group_by(["p", "s"], use_threads=False).aggregate([])
        cells = pa.table(
            {"p": people, "e": events["event"], "h": pc.multiply(pc.divide(stamps, HOUR_MS), HOUR_MS), "passive": passive}
        ).group_by(["p", "e", "h", "passive"], use_threads=False).aggregate([([], "count_all")])
        revenue = self._candidates(texts, settings.revenue_property)
        latest = {key: self._candidates(texts, key) for key in settings.properties}
        with self._lock:
            book.merge(merges)
            profiles = book.profiles
            for person, first, last, count in zip(*(by_person[c].to_pylist() for c in ("p", "t_min", "t_max", "count_all")), strict=True):
                profile = profiles.get(person)
                if profile is None:
                    profile = profiles[person] = Profile(person, first, last)
                else:
                    profile.first_seen_ms = min(profile.first_seen_ms, first)
                    profile.last_seen_ms = max(profile.last_seen_ms, last)
                profile.events += count
            for person, session in zip(sessions["p"].to_pylist(), sessions["s"].to_pylist(), strict=True):
                profiles[person].sessions.add(session)
            for person, event, hour, is_passive, count in zip(
                *(cells[c].to_pylist() for c in ("p", "e", "h", "passive", "count_all")), strict=True
            ):
                profile = profiles[person]
                counts = profile.counts.setdefault(event, {})
                counts[hour] = counts.get(hour, 0) + count
                weight = book.weights.weight(event, is_passive)
                if weight:
                    profile.engagement[hour] = profile.engagement.get(hour, 0.0) + weight * count
            for row, properties in revenue:
                amount = properties.get(settings.revenue_property)
                if isinstance(amount, int | float) and not isinstance(amount, bool):
                    profiles[people[row].as_py()].revenue += amount
            for key, rows in latest.items():
                for row, properties in rows:
                    value = properties.get(key)
                    if value is None:
                        continue
                    profile = profiles[people[row].as_py()]
                    when, event_id = stamps[row].as_py(), events["event_id"][row].as_py()
                    current = profile.last_values.get(key)
                    if current is None or (when, event_id) > current[:2]:
                        profile.last_values[key] = (when, event_id, value)
            for person, user_id, traits in zip(
                persons["person_id"].to_pylist(), persons["user_id"].to_pylist(), persons["traits"].to_pylist(), strict=True
            ):
                book.set_person(person, user_id, msgspec.json.decode(traits))
            self._counted()

    def _record_rows(self, events: pa.Table, persons: pa.Table, merges: Sequence[tuple[str, str]]) -> None:
        columns = [events[name].to_pylist() for name in ("event_id", "person_id", "event", "session_id", "properties")]
        stamps = events["timestamp"].cast(pa.int64()).to_pylist()
        with self._lock:
            book = self.book
            book.merge(merges)
            for (event_id, person, name, session, text), at in zip(zip(*columns, strict=True), stamps, strict=True):
                properties = msgspec.json.decode(text)
                book.apply(StoredEvent(event_id, person, name, session, at, properties if isinstance(properties, dict) else {}))
            for row in persons.select(["person_id", "user_id", "traits"]).to_pylist():
                book.set_person(row["person_id"], row["user_id"], msgspec.json.decode(row["traits"]))
            self._counted()

    def _counted(self) -> None:
        """One more batch recorded (under the lock): now and then, drop the hours no window reaches."""
        self._batches += 1
        if self._batches % _FORGET_EVERY == 0:
            self.book.forget_old(int(datetime.now(UTC).timestamp() * 1000))

    @staticmethod
    def _candidates(texts: pa.ChunkedArray, key: str) -> list[tuple[int, dict[str, Any]]]:
        """(row, decoded properties) of the rows whose JSON may hold ``key`` at the top."""
        rows = pc.indices_nonzero(pc.match_substring(texts, f'"{key}"')).to_pylist()
        found = []
        for row in rows:
            properties = msgspec.json.decode(texts[row].as_py())
            if isinstance(properties, dict) and key in properties:
                found.append((row, properties))
        return found

    @staticmethod
    def _passive(names: pa.ChunkedArray, texts: pa.ChunkedArray, weighted: set[str]) -> pa.Array:
        """Per event: is it weighted and is its top-level ``signal`` ``"passive"``."""
        flags = [False] * len(texts)
        if weighted:
            maybe = pc.and_(pc.is_in(names, value_set=pa.array(sorted(weighted))), pc.match_substring(texts, '"passive"'))
            for row in pc.indices_nonzero(maybe).to_pylist():
                properties = msgspec.json.decode(texts[row].as_py())
                flags[row] = isinstance(properties, dict) and properties.get("signal") == "passive"
        return pa.array(flags, pa.bool_())

    # -- reading ----------------------------------------------------------------------

    def view(self, person_id: str, now: datetime | None = None) -> ProfileView | None:
        with self._lock:
            profile = self.book.get(person_id)
            return self.book.view(profile, now) if profile is not None else None

    def views(self, now: datetime | None = None) -> dict[str, ProfileView]:
        with self._lock:
            return {person: self.book.view(profile, now) for person, profile in self.book.profiles.items()}


__all__ = ["HOUR_MS", "LiveProfiles"]
