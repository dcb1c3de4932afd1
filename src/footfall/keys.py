"""API keys: write keys (per source, for sending events) and secret keys (for
reading and admin). The two never mix: a write key opens no read route and a
secret key sends no events.

Keys live in ``keys.json`` in the data directory, readable only by its owner,
as SHA-256 hashes: the key itself is shown once, when it is created. Keys are
32 random bytes, so a plain hash is enough (nothing to brute-force) and lets a
request be authenticated with one dictionary lookup. A running server re-reads
the file within a second of a change, so ``footfall keys create`` and
``revoke`` take effect without a restart.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec

from footfall.errors import FootfallError

KEYS_FILE = "keys.json"
KeyKind = Literal["write", "secret"]
_PREFIX: dict[str, str] = {"write": "ffw_", "secret": "ffs_"}
_SOURCE_NAME = re.compile(r"[A-Za-z0-9_\-.]{1,64}")


class KeyStoreError(FootfallError):
    code = "bad_key"


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # short public handle, safe to show and log
    kind: KeyKind
    source: str  # the source a write key sends for (web, ios, backend, ...); "admin" for secret keys
    hash: str  # SHA-256 of the key, hex
    created_at: datetime
    revoked_at: datetime | None = None
    # Privacy at the door, per source: drop the IP entirely, or zero its last octet.
    drop_ip: bool = False
    anonymize_ip: bool = False

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class _KeysFile(msgspec.Struct):
    keys: list[KeyRecord] = msgspec.field(default_factory=list)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyStore:
    """The keys of one data directory. Thread-safe; cheap to ask on every request."""

    def __init__(self, data_dir: Path, *, refresh_every: float = 1.0) -> None:
        self.path = Path(data_dir) / KEYS_FILE
        # Another process (`footfall keys`) may change the file: look at it at
        # most this often, not on every request.
        self.refresh_every = refresh_every
        self._checked_at = -math.inf
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._records: list[KeyRecord] = []
        self._by_hash: dict[str, KeyRecord] = {}

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.refresh_every:
            return
        self._checked_at = now
        stamp = self._stat()
        if stamp == self._stamp and self._stamp is not None:
            return
        if stamp is None:
            records: list[KeyRecord] = []
        else:
            try:
                records = msgspec.json.decode(self.path.read_bytes(), type=_KeysFile).keys
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise KeyStoreError(f"{self.path} is damaged ({exc}); restore it from a backup") from None
        self._records = records
        self._by_hash = {record.hash: record for record in records if record.active}
        self._stamp = stamp

    def records(self) -> list[KeyRecord]:
        with self._lock:
            self._refresh()
            return list(self._records)

    def lookup(self, key: str) -> KeyRecord | None:
        """The active key record for ``key`` (of either kind), or None."""
        with self._lock:
            self._refresh()
            return self._by_hash.get(hash_key(key))

    def authenticate(self, key: str, kind: KeyKind) -> KeyRecord | None:
        """The active key record of this kind for ``key``, or None."""
        record = self.lookup(key)
        return record if record is not None and record.kind == kind else None

    def create(
        self, kind: KeyKind, source: str, *, drop_ip: bool = False, anonymize_ip: bool = False
    ) -> tuple[str, KeyRecord]:
        """A new key; returns the key (shown once) and its stored record."""
        if kind not in _PREFIX:
            raise KeyStoreError(f"key kind must be 'write' or 'secret', got {kind!r}")
        if not _SOURCE_NAME.fullmatch(source):
            raise KeyStoreError(f"source {source!r}: use 1-64 letters, digits, '-', '_' or '.'")
        if kind == "secret" and (drop_ip or anonymize_ip):
            raise KeyStoreError("IP settings belong to write keys (the sources that send events)")
        key = _PREFIX[kind] + secrets.token_urlsafe(32)
        record = KeyRecord(
            id=secrets.token_hex(4),
            kind=kind,
            source=source,
            hash=hash_key(key),
            created_at=datetime.now(UTC),
            drop_ip=drop_ip,
            anonymize_ip=anonymize_ip,
        )
        with self._lock:
            self._refresh()
            self._write([*self._records, record])
        return key, record

    def revoke(self, key_id: str) -> KeyRecord:
        with self._lock:
            self._refresh()
            matches = [record for record in self._records if record.id == key_id]
            if not matches:
                raise KeyStoreError(f"no key with id {key_id!r}; `footfall keys list` shows the ids")
            if not matches[0].active:
                raise KeyStoreError(f"key {key_id} was already revoked at {matches[0].revoked_at:%Y-%m-%d %H:%M} UTC")
            revoked = msgspec.structs.replace(matches[0], revoked_at=datetime.now(UTC))
            self._write([revoked if record.id == key_id else record for record in self._records])
            return revoked

    def _write(self, records: list[KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(msgspec.json.format(msgspec.json.encode(_KeysFile(records))))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        self._stamp = None  # re-read on next use
        self._checked_at = -math.inf
