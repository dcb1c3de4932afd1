"""Identity rules, as timelines of id sightings."""

from __future__ import annotations

import pytest

from footfall.identity import IdentityResolver, Merge, person_id_for


@pytest.fixture
def resolver() -> IdentityResolver:
    return IdentityResolver("default")


def test_anonymous_then_identified_is_one_person(resolver: IdentityResolver) -> None:
    before = resolver.resolve("a1", None)
    assert resolver.resolve("a1", "u1") == before
    assert resolver.resolve(None, "u1") == before
    assert resolver.take_changes()[1] == []


def test_second_device_merges_into_the_known_user(resolver: IdentityResolver) -> None:
    laptop = resolver.resolve("laptop", "u1")
    phone = resolver.resolve("phone", None)
    assert phone != laptop
    resolver.take_changes()
    assert resolver.resolve("phone", "u1") == laptop
    identities, merges = resolver.take_changes()
    assert merges == [Merge(phone, laptop)]
    assert resolver.by_anonymous["phone"] == laptop
    assert ("anonymous", "phone", laptop) in identities


def test_two_identified_users_are_never_merged_by_identify(resolver: IdentityResolver) -> None:
    # A shared computer: u1 logs in, then u2 on the same browser.
    first = resolver.resolve("shared", "u1")
    second = resolver.resolve("shared", "u2")
    assert first != second
    assert resolver.take_changes()[1] == []
    # Anonymous activity on the browser stays with its first person.
    assert resolver.resolve("shared", None) == first


def test_known_user_with_new_anonymous_id_links_it(resolver: IdentityResolver) -> None:
    person = resolver.resolve(None, "u1")
    assert resolver.resolve("fresh", "u1") == person
    assert resolver.by_anonymous["fresh"] == person


def test_alias_merges_even_identified_persons(resolver: IdentityResolver) -> None:
    old = resolver.resolve(None, "old-login")
    new = resolver.resolve(None, "new-login")
    resolver.take_changes()
    assert resolver.alias("old-login", "new-login") == new
    assert resolver.take_changes()[1] == [Merge(old, new)]
    assert resolver.resolve(None, "old-login") == new


def test_alias_of_an_unknown_previous_id_links_it(resolver: IdentityResolver) -> None:
    person = resolver.alias("anon-x", "u9")
    assert resolver.resolve("anon-x", None) == person
    assert resolver.resolve(None, "u9") == person


def test_chained_merges_carry_every_id(resolver: IdentityResolver) -> None:
    target = resolver.resolve(None, "u1")
    resolver.resolve("d1", None)
    resolver.resolve("d2", None)
    resolver.resolve("d1", "u1")
    resolver.resolve("d2", "u1")
    assert {resolver.by_anonymous["d1"], resolver.by_anonymous["d2"]} == {target}


def test_person_ids_are_deterministic_and_project_scoped() -> None:
    assert person_id_for("p", "user", "u1") == person_id_for("p", "user", "u1")
    assert person_id_for("p", "user", "u1") != person_id_for("q", "user", "u1")
    assert person_id_for("p", "user", "u1") != person_id_for("p", "anonymous", "u1")


def test_rebuilt_state_resolves_the_same(resolver: IdentityResolver) -> None:
    resolver.resolve("a1", "u1")
    resolver.resolve("a2", None)
    rows = [(identity.kind, identity.value, identity.person_id) for identity in resolver.take_changes()[0]]
    rebuilt = IdentityResolver.from_identities("default", rows)
    assert rebuilt.resolve("a1", None) == resolver.resolve("a1", None)
    assert rebuilt.resolve("a2", None) == resolver.resolve("a2", None)
    assert rebuilt.by_user == resolver.by_user
