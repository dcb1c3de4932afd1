"""Live profiles: each person's counters, scores and latest values, kept up to
date as events are stored (see ``footfall.profiles.state`` for the definitions).

Two backends keep them: ``LiveProfiles`` in the worker's memory (the default),
and ``footfall.profiles.redis.RedisProfiles`` in Redis, where any process can
read them. ``open_profiles`` picks the one ``[profiles] backend`` names."""

from footfall.profiles.live import LiveProfiles
from footfall.profiles.state import Profile, ProfileBook, ProfileView
from footfall.store.database import Database


def open_profiles(database: Database) -> LiveProfiles:
    """The live profiles of a database, kept where its config says."""
    settings = database.config.profiles
    if settings.backend == "redis":
        from footfall.profiles.redis import RedisProfiles  # the client library only when used

        return RedisProfiles(database, settings.redis_url)
    return LiveProfiles(database)


__all__ = ["LiveProfiles", "Profile", "ProfileBook", "ProfileView", "open_profiles"]
