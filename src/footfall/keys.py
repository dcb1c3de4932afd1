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
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec

from footfall.errors import FootfallError
from footfall.watched import WatchedFile

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
        # Another process (`footfall keys`) may change the file: look at it at
        # most every ``refresh_every`` seconds, not on every request.
        self.file = WatchedFile(Path(data_dir) / KEYS_FILE, _KeysFile, error=KeyStoreError, refresh_every=refresh_every)
        self.path = self.file.path
        self._version = -1
        self._by_hash: dict[str, KeyRecord] = {}

    def records(self) -> list[KeyRecord]:
        return list(self.file.read().keys)

    def lookup(self, key: str) -> KeyRecord | None:
        """The active key record for ``key`` (of either kind), or None."""
        with self.file.lock:
            records = self.file.read().keys
            if self._version != self.file.version:
                self._by_hash = {record.hash: record for record in records if record.active}
                self._version = self.file.version
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
        self.file.update(lambda current: _KeysFile([*current.keys, record]))
        return key, record

    def revoke(self, key_id: str) -> KeyRecord:
        revoked: list[KeyRecord] = []

        def change(current: _KeysFile) -> _KeysFile:
            matches = [record for record in current.keys if record.id == key_id]
            if not matches:
                raise KeyStoreError(f"no key with id {key_id!r}; `footfall keys list` shows the ids")
            if not matches[0].active:
                raise KeyStoreError(f"key {key_id} was already revoked at {matches[0].revoked_at:%Y-%m-%d %H:%M} UTC")
            revoked.append(msgspec.structs.replace(matches[0], revoked_at=datetime.now(UTC)))
            return _KeysFile([revoked[0] if record.id == key_id else record for record in current.keys])

        self.file.update(change)
        return revoked[0]
