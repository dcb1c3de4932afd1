"""Person resolution: anonymous and user ids to persons, and merges."""

from footfall.identity.resolver import IdentityResolver, Merge, NewIdentity, person_id_for

__all__ = ["IdentityResolver", "Merge", "NewIdentity", "person_id_for"]
