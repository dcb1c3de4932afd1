"""Live profiles: each person's counters, scores and latest values, kept up to
date as events are stored (see ``footfall.profiles.state`` for the definitions)."""

from footfall.profiles.live import LiveProfiles
from footfall.profiles.state import Profile, ProfileBook, ProfileView

__all__ = ["LiveProfiles", "Profile", "ProfileBook", "ProfileView"]
