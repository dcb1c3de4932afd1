"""Resolving anonymous and user ids to persons.

Rules (the same Segment/PostHog users know):

- An anonymous id seen for the first time starts an anonymous person.
- When an anonymous id and a user id appear together (identify, or any message
  carrying both), the user id joins the anonymous person if that person is not
  yet identified; if the user id already has a person, the anonymous person is
  merged into it.
- Two persons that are both identified are never merged by identify; the
  anonymous id then stays with the person it first belonged to.
- ``alias`` is an explicit request: the person of ``previous_id`` is merged into
  the person of ``user_id`` even if both are identified.

The resolver is pure state: it records what changed (new identities, merges)
for the caller to persist.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

_PERSON_NAMESPACE = uuid.UUID("0b7c3f0e-2a8e-4f60-9a55-3c1d2b7e9f11")

ANONYMOUS = "anonymous"
USER = "user"


def person_id_for(project_id: str, kind: str, value: str) -> str:
    """A deterministic person id, so a replay of the same events yields the same persons.

    It is ``uuid5(namespace, "project\\x1fkind\\x1fvalue")``, formatted without building
    UUID objects (this runs once per new id in bulk imports).

    >>> person_id_for("p", "user", "u1") == str(uuid.uuid5(_PERSON_NAMESPACE, "p\x1fuser\x1fu1"))
    True
    """
    digest = bytearray(hashlib.sha1(_PERSON_NAMESPACE.bytes + f"{project_id}\x1f{kind}\x1f{value}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class NewIdentity(NamedTuple):
    kind: str
    value: str
    person_id: str


class Merge(NamedTuple):
    old_person_id: str
    new_person_id: str


@dataclass
class IdentityResolver:
    project_id: str
    by_anonymous: dict[str, str] = field(default_factory=dict)
    by_user: dict[str, str] = field(default_factory=dict)
    # Reverse indexes, so a merge can move every id of a person. A person
    # with an entry in ``users_of_person`` is identified.
    users_of_person: dict[str, set[str]] = field(default_factory=dict)
    anonymous_of_person: dict[str, set[str]] = field(default_factory=dict)
    new_identities: list[NewIdentity] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)

    @classmethod
    def from_identities(
        cls, project_id: str, rows: list[tuple[str, str, str]]
    ) -> IdentityResolver:
        """Rebuild state from stored ``(kind, value, person_id)`` rows."""
        resolver = cls(project_id)
        for kind, value, person_id in rows:
            if kind == USER:
                resolver.by_user[value] = person_id
                resolver.users_of_person.setdefault(person_id, set()).add(value)
            else:
                resolver.by_anonymous[value] = person_id
                resolver.anonymous_of_person.setdefault(person_id, set()).add(value)
        return resolver

    def take_changes(self) -> tuple[list[NewIdentity], list[Merge]]:
        """What changed since the last call, in order; clears the record."""
        changes = (self.new_identities, self.merges)
        self.new_identities, self.merges = [], []
        return changes

    def _link_anonymous(self, anonymous_id: str, person_id: str) -> None:
        self.by_anonymous[anonymous_id] = person_id
        self.anonymous_of_person.setdefault(person_id, set()).add(anonymous_id)
        self.new_identities.append(NewIdentity(ANONYMOUS, anonymous_id, person_id))

    def _link_user(self, user_id: str, person_id: str) -> None:
        self.by_user[user_id] = person_id
        self.users_of_person.setdefault(person_id, set()).add(user_id)
        self.new_identities.append(NewIdentity(USER, user_id, person_id))

    def _merge(self, old: str, new: str) -> None:
        for anonymous_id in sorted(self.anonymous_of_person.pop(old, set())):
            self._link_anonymous(anonymous_id, new)
        for user_id in sorted(self.users_of_person.pop(old, set())):
            self._link_user(user_id, new)
        self.merges.append(Merge(old, new))

    def resolve(self, anonymous_id: str | None, user_id: str | None) -> str:
        """The person for a message carrying these ids (at least one)."""
        if user_id is None:
            if anonymous_id is None:
                raise ValueError("a message needs an anonymous id or a user id")
            person = self.by_anonymous.get(anonymous_id)
            if person is None:
                person = person_id_for(self.project_id, ANONYMOUS, anonymous_id)
                self._link_anonymous(anonymous_id, person)
            return person

        person = self.by_user.get(user_id)
        anonymous_person = self.by_anonymous.get(anonymous_id) if anonymous_id else None
        if person is None:
            if anonymous_person is not None and anonymous_person not in self.users_of_person:
                self._link_user(user_id, anonymous_person)
                return anonymous_person
            person = person_id_for(self.project_id, USER, user_id)
            self._link_user(user_id, person)
            if anonymous_id is not None and anonymous_person is None:
                self._link_anonymous(anonymous_id, person)
            return person

        if anonymous_id is not None:
            if anonymous_person is None:
                self._link_anonymous(anonymous_id, person)
            elif anonymous_person != person and anonymous_person not in self.users_of_person:
                self._merge(anonymous_person, person)
        return person

    def alias(self, previous_id: str, user_id: str) -> str:
        """Make ``previous_id`` (anonymous or user id) an alias of ``user_id``."""
        previous_person = self.by_user.get(previous_id) or self.by_anonymous.get(previous_id)
        person = self.by_user.get(user_id)
        if person is None:
            if previous_person is None:
                person = person_id_for(self.project_id, USER, user_id)
                self._link_anonymous(previous_id, person)
            else:
                person = previous_person
            self._link_user(user_id, person)
            return person
        if previous_person is None:
            self._link_anonymous(previous_id, person)
        elif previous_person != person:
            self._merge(previous_person, person)
        return person
