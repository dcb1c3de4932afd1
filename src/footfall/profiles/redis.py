"""Live profiles in Redis: written by the worker, read by any process.

The worker keeps profiles exactly as ``LiveProfiles`` does (the same code
loads them from the store and applies each batch), but holds only a bounded
cache of them. After each batch it writes the profiles the batch changed, and
deletes those merged into other persons, in one transaction: one round trip.
A reader (the API in any process, on any machine: ``RedisProfileReader``)
fetches one profile with one ``GET`` and computes its view (windows, the
engagement score) at the moment it reads, from the same settings.

Keys, for project ``P``:

- ``footfall:P:profile:<person id>``: the profile as JSON, the fields of
  ``footfall.profiles.state.Profile`` (hourly counts and all). JSON rather than
  MessagePack because trait and property values are whatever JSON the events
  carried, integers of any size included.
- ``footfall:P:profiles``: what the profiles were built from: a fingerprint of
  their encoding and of the settings that shape them, and the store's
  watermark (its event count and latest ``received_at``) when they were last
  written.

On start, profiles whose meta key matches the settings and the store are
taken as they are; otherwise they are rebuilt from the store and written
over, and the keys of persons no longer in the store are deleted.

The store stays the source of truth. When a batch's profiles do not reach
Redis (it is down), the error says so and the profiles are stale; the first
batch stored once Redis answers again rebuilds them from the store, which has
every batch. One worker writes a project's profiles: its cache assumes no one
else changes them.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from footfall.config import ProjectConfig
from footfall.errors import ConfigError, StoreError
from footfall.events.record import SYSTEM_EVENTS
from footfall.profiles.live import LiveProfiles
from footfall.profiles.state import Profile, ProfileBook, ProfileView
from footfall.store.database import Database

log = logging.getLogger("footfall.profiles")

# Part of the fingerprint: change it when the stored encoding changes, so
# profiles written by another version are rebuilt rather than misread.
FORMAT = 1
# Profiles the worker keeps in memory between batches (most recently changed).
CACHE_SIZE = 100_000
# Keys per command or pipeline when a whole project's profiles are written or read.
_CHUNK = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_encoder = msgspec.json.Encoder()
_profile_decoder = msgspec.json.Decoder(Profile)


class Watermark(NamedTuple):
    """How far the store is: its event count and latest ``received_at`` (ms)."""

    events: int
    received_ms: int


class Meta(msgspec.Struct, frozen=True):
    fingerprint: str
    events: int
    received_ms: int


class Keys:
    """The key names of one project's profiles."""

    def __init__(self, project_id: str) -> None:
        # Project ids are letters, digits, '_' and '-' (the config checks), so
        # the prefix is also a literal glob pattern.
        self.profile_prefix = f"footfall:{project_id}:profile:"
        self.meta = f"footfall:{project_id}:profiles"
        self.every_profile = self.profile_prefix + "*"

    def profile(self, person_id: str) -> str:
        return self.profile_prefix + person_id

    def person(self, key: bytes) -> str:
        return key.decode()[len(self.profile_prefix):]


def fingerprint(config: ProjectConfig) -> str:
    """What shapes the stored profiles: their encoding, the project, and the
    profile and engagement settings (not where the profiles are kept)."""
    profiles = msgspec.to_builtins(config.profiles)
    del profiles["backend"], profiles["redis_url"]
    shaping = [FORMAT, config.project_id, profiles, msgspec.to_builtins(config.engagement)]
    return hashlib.blake2b(msgspec.json.encode(shaping, order="sorted"), digest_size=12).hexdigest()


def shown(url: str) -> str:
    """A Redis URL as messages show it: without its password.

    >>> shown("redis://:s3cret@cache.internal:6379/2")
    'redis://:***@cache.internal:6379/2'
    """
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _milliseconds(moment: datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _chunks(items: Iterable[str], size: int = _CHUNK) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class RedisProfileReader:
    """A project's profiles as its worker wrote them to Redis; thread-safe.

    Needs only the project's config (for the windows and weights of a view)
    and the Redis URL: no event store."""

    def __init__(self, config: ProjectConfig, url: str | None = None) -> None:
        self.url = url or config.profiles.redis_url
        self.keys = Keys(config.project_id)
        self.fingerprint = fingerprint(config)
        # Settings for views; holds no profiles.
        self.book = ProfileBook(config.profiles, config.engagement)
        try:
            # One immediate retry (a pooled connection the server has closed),
            # then an error: a reader answers in milliseconds or says Redis is down.
            self.client = redis.Redis.from_url(
                self.url, socket_connect_timeout=2.0, socket_timeout=10.0, retry=Retry(NoBackoff(), 1)
            )
        except ValueError as exc:
            raise ConfigError(f"[profiles] redis_url {shown(self.url)!r}: {exc}") from None
        self._ready = False

    @contextmanager
    def talking(self, doing: str) -> Iterator[None]:
        """Redis failures as a ``StoreError`` that says where and what to do."""
        try:
            yield
        except redis.RedisError as exc:
            raise StoreError(
                f"live profiles: Redis at {shown(self.url)} failed while {doing} ({type(exc).__name__}: {exc});"
                " start it (e.g. `redis-server`), fix [profiles] redis_url in footfall.toml,"
                ' or set [profiles] backend = "embedded"'
            ) from exc

    @property
    def loaded(self) -> bool:
        """Whether Redis holds profiles built with these settings (asked until it does)."""
        if not self._ready:
            meta = self.meta()
            self._ready = meta is not None and meta.fingerprint == self.fingerprint
        return self._ready

    def meta(self) -> Meta | None:
        with self.talking("reading the profiles' meta key"):
            blob = self.client.get(self.keys.meta)
        try:
            return None if blob is None else msgspec.json.decode(blob, type=Meta)
        except msgspec.DecodeError:
            return None  # written by another version: rebuilt on the worker's next start

    def view(self, person_id: str, now: datetime | None = None) -> ProfileView | None:
        with self.talking("reading a profile"):
            blob = self.client.get(self.keys.profile(person_id))
        return None if blob is None else self.book.view(_profile_decoder.decode(blob), now)

    def views(self, now: datetime | None = None) -> dict[str, ProfileView]:
        """Every profile, viewed at one moment (a scan of the project's keys)."""
        moment = now or datetime.now(UTC)
        views = {}
        with self.talking("reading every profile"):
            for keys in _chunks(self.client.scan_iter(match=self.keys.every_profile, count=_CHUNK)):
                for blob in self.client.mget(keys):
                    if blob is not None:
                        profile = _profile_decoder.decode(blob)
                        views[profile.person_id] = self.book.view(profile, moment)
        return views


class RedisProfiles(LiveProfiles):
    """The worker's side: profiles kept as ``LiveProfiles`` keeps them and
    written to Redis after each batch; reads go to Redis."""

    def __init__(self, database: Database, url: str | None = None, *, cache_size: int = CACHE_SIZE) -> None:
        self._loaded = False
        super().__init__(database)
        self.reader = RedisProfileReader(database.config, url)
        self.keys = self.reader.keys
        self.cache_size = cache_size
        self.reused = False  # whether the last load took the profiles Redis held
        self._stale = False
        self._watermark = Watermark(0, 0)

    @property
    def loaded(self) -> bool:
        """Loaded here, or by a worker before (Redis holds profiles for these settings)."""
        return self._loaded or self.reader.loaded

    @loaded.setter
    def loaded(self, value: bool) -> None:
        self._loaded = value

    # -- from the store ---------------------------------------------------------------

    def load(self, now: datetime | None = None) -> RedisProfiles:
        """Take the profiles Redis holds if they were written from this store as
        it is now, with these settings; otherwise rebuild and write them."""
        watermark = self._store_watermark()
        expected = Meta(self.reader.fingerprint, *watermark)
        self._stale = True  # until this load is through
        self.reused = self.reader.meta() == expected
        if self.reused:
            with self._lock:
                self.book = self._empty_book()
        else:
            self._rebuild(now, expected)
        self._watermark = watermark
        self._stale = False
        self.loaded = True
        return self

    def _rebuild(self, now: datetime | None, meta: Meta) -> None:
        client = self.reader.client
        with self.reader.talking("clearing the profiles' meta key"):
            client.delete(self.keys.meta)  # a rebuild cut short is done again on the next start
        super().load(now)
        profiles = self.book.profiles
        with self.reader.talking("writing the profiles rebuilt from the store"):
            for persons in _chunks(profiles):
                pipeline = client.pipeline(transaction=False)
                for person in persons:
                    pipeline.set(self.keys.profile(person), _encoder.encode(profiles[person]))
                pipeline.execute()
            gone = [
                key for key in client.scan_iter(match=self.keys.every_profile, count=_CHUNK)
                if self.keys.person(key) not in profiles
            ]
            for keys in _chunks(gone):
                client.unlink(*keys)
            client.set(self.keys.meta, _encoder.encode(meta))
        if len(profiles) > self.cache_size:
            latest = sorted(profiles.values(), key=lambda profile: profile.last_seen_ms)[-self.cache_size:]
            self.book.profiles = {profile.person_id: profile for profile in latest}

    def _store_watermark(self) -> Watermark:
        """Over the events profiles count: not the membership changes Footfall
        writes to the store itself, which never pass through ``record``."""
        quote = self.database.backend.quote
        row = self.database.query_arrow(
            "SELECT count(*) AS n, max(received_at) AS latest FROM events"
            f" WHERE project_id = {quote(self.database.project_id)}"
            f" AND event NOT IN ({', '.join(quote(name) for name in SYSTEM_EVENTS)})"
        ).to_pylist()[0]
        return Watermark(int(row["n"]), _milliseconds(row["latest"]))

    def _empty_book(self) -> ProfileBook:
        return ProfileBook(self.database.config.profiles, self.database.config.engagement)

    # -- from the pipeline ------------------------------------------------------------

    def record(self, events: pa.Table, persons: pa.Table, merges: Sequence[tuple[str, str]]) -> None:
        """Apply a batch the store has just taken, then write the profiles it
        changed to Redis (one transaction)."""
        if self._stale:
            # The store holds this batch already: a rebuild from it catches up.
            with self.reader.talking("catching up with the store"):
                self.reader.client.ping()
            self.load()
            log.warning(
                "live profiles: Redis at %s answers again; profiles %s", shown(self.reader.url),
                "up to date" if self.reused else "rebuilt from the store",
            )
            return
        touched = {
            *pc.unique(events["person_id"]).to_pylist(),
            *(person for merge in merges for person in merge),
            *persons["person_id"].to_pylist(),
        }
        counted = events.filter(pc.invert(pc.is_in(events["event"], value_set=pa.array(SYSTEM_EVENTS))))
        watermark = Watermark(
            self._watermark.events + counted.num_rows,
            max(self._watermark.received_ms, _milliseconds(pc.max(counted["received_at"]).as_py())),
        )
        try:
            self._fetch(touched)
            super().record(events, persons, merges)
            kept = self._write(touched, Meta(self.reader.fingerprint, *watermark))
        except BaseException as exc:
            # Redis may lack what the cache now holds: rebuild with the next batch.
            # Said here too, as the store has taken the batch and a caller that
            # retries it finds nothing left to store.
            log.error("live profiles are stale until Redis answers, then rebuilt from the store: %s", exc)
            self._stale = True
            with self._lock:
                self.book = self._empty_book()
            raise
        if not kept:
            log.warning(
                "live profiles: Redis at %s lost them (restarted without persistence, or flushed);"
                " rebuilding them from the store", shown(self.reader.url),
            )
            self.load()
            return
        self._watermark = watermark
        self._keep_recent(touched)

    def _fetch(self, persons: set[str]) -> None:
        """Bring these persons' profiles into the cache: one MGET for those it lacks."""
        cached = self.book.profiles
        missing = [person for person in persons if person not in cached]
        if not missing:
            return
        with self.reader.talking("reading the profiles a batch changes"):
            blobs = self.reader.client.mget([self.keys.profile(person) for person in missing])
        for person, blob in zip(missing, blobs, strict=True):
            if blob is not None:
                cached[person] = _profile_decoder.decode(blob)

    def _write(self, persons: set[str], meta: Meta) -> bool:
        """Write these persons' profiles and the new meta key; False when Redis
        had lost the meta key, and with it (most likely) every profile."""
        profiles = self.book.profiles
        transaction = self.reader.client.pipeline(transaction=True)
        for person in persons:
            profile = profiles.get(person)
            if profile is None:
                transaction.delete(self.keys.profile(person))  # merged into another person
            else:
                transaction.set(self.keys.profile(person), _encoder.encode(profile))
        transaction.set(self.keys.meta, _encoder.encode(meta), xx=True)
        with self.reader.talking("writing the profiles of a batch"):
            return transaction.execute()[-1] is not None

    def _keep_recent(self, persons: set[str]) -> None:
        """Move these persons to the recent end of the cache; drop the oldest beyond its size."""
        profiles = self.book.profiles
        for person in persons:
            profile = profiles.pop(person, None)
            if profile is not None:
                profiles[person] = profile
        for person in list(itertools.islice(profiles, max(0, len(profiles) - self.cache_size))):
            del profiles[person]

    # -- reading ----------------------------------------------------------------------

    def view(self, person_id: str, now: datetime | None = None) -> ProfileView | None:
        return self.reader.view(person_id, now)

    def views(self, now: datetime | None = None) -> dict[str, ProfileView]:
        return self.reader.views(now)


__all__ = ["RedisProfileReader", "RedisProfiles", "fingerprint"]
