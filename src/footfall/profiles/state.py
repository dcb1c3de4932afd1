"""Live profiles: what is known about each person now, kept up to date event by event.

A profile holds a person's first and last seen times, their sessions, revenue,
the latest value of chosen event properties, counts per event name over
rolling windows, and their engagement score. It is a pure function of the
person's stored events, so a profile book built incrementally by the pipeline
and one loaded from the store with SQL (``footfall.profiles.load``) agree;
the tests hold them to it.

Rolling windows are counted in whole hours: at 14:35, "the last 7 days"
covers the events timed from 14:00 seven days earlier on (and any timed in the
future). Counts are kept per person, event name and hour, for the longest
window; older hours are dropped as the clock moves on.

The engagement score is the configured weighted sum of a person's events in
the engagement window (``[engagement]`` in ``footfall.toml``): an event counts
its name's weight (0 for names without one), times ``passive_weight`` when its
``signal`` property is ``"passive"``, and, with a ``recency_half_life``, half
as much for each half-life of age, ages measured in whole hours as above.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from footfall.config import EngagementSettings, ProfileSettings
from footfall.durations import parse_duration

HOUR_MS = 3_600_000


def hour_of(timestamp_ms: int) -> int:
    """The start of the hour holding a time, in epoch milliseconds."""
    return timestamp_ms - timestamp_ms % HOUR_MS


@dataclass(frozen=True)
class Weights:
    """How much one event adds to the engagement score (see the module docs)."""

    by_event: Mapping[str, float]
    passive_weight: float
    window_ms: int
    half_life_ms: int | None

    @classmethod
    def of(cls, settings: EngagementSettings) -> Weights:
        half_life = parse_duration(settings.recency_half_life) if settings.recency_half_life else None
        return cls(
            by_event=dict(settings.weights),
            passive_weight=settings.passive_weight,
            window_ms=int(parse_duration(settings.window).total_seconds() * 1000),
            half_life_ms=int(half_life.total_seconds() * 1000) if half_life is not None else None,
        )

    def weight(self, event: str, passive: bool) -> float:
        return self.by_event.get(event, 0.0) * (self.passive_weight if passive else 1.0)

    def decay(self, age_ms: int) -> float:
        return 1.0 if self.half_life_ms is None else 0.5 ** (age_ms / self.half_life_ms)


@dataclass
class Profile:
    person_id: str
    first_seen_ms: int
    last_seen_ms: int
    user_id: str | None = None
    traits: dict[str, Any] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)
    events: int = 0
    revenue: float = 0.0
    # property -> (time, event id, value): the latest by event time, then id.
    last_values: dict[str, tuple[int, str, Any]] = field(default_factory=dict)
    # event name -> hour -> count
    counts: dict[str, dict[int, int]] = field(default_factory=dict)
    # hour -> weighted events (before recency decay)
    engagement: dict[int, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    def absorb(self, other: Profile) -> None:
        """Fold in the profile of a person merged into this one."""
        self.first_seen_ms = min(self.first_seen_ms, other.first_seen_ms)
        self.last_seen_ms = max(self.last_seen_ms, other.last_seen_ms)
        self.user_id = self.user_id or other.user_id
        self.traits = {**other.traits, **self.traits}
        self.sessions |= other.sessions
        self.events += other.events
        self.revenue += other.revenue
        for key, latest in other.last_values.items():
            mine = self.last_values.get(key)
            if mine is None or latest[:2] > mine[:2]:
                self.last_values[key] = latest
        for event, hours in other.counts.items():
            counts = self.counts.setdefault(event, {})
            for hour, count in hours.items():
                counts[hour] = counts.get(hour, 0) + count
        for hour, weight in other.engagement.items():
            self.engagement[hour] = self.engagement.get(hour, 0.0) + weight
        self.scores = {**other.scores, **self.scores}

    def forget_before(self, hour: int) -> None:
        """Drop hourly counts older than ``hour`` (outside every window)."""
        for event in list(self.counts):
            hours = self.counts[event]
            for old in [h for h in hours if h < hour]:
                del hours[old]
            if not hours:
                del self.counts[event]
        for old in [h for h in self.engagement if h < hour]:
            del self.engagement[old]


class ProfileView(msgspec.Struct, frozen=True, kw_only=True):
    """A profile as the API shows it, at one moment."""

    person_id: str
    user_id: str | None
    traits: dict[str, Any]
    first_seen: datetime
    last_seen: datetime
    events: int
    sessions: int
    revenue: float
    engagement_score: float
    counts: dict[str, dict[str, int]]  # window -> event name -> count
    last_values: dict[str, Any]
    scores: dict[str, float]
    as_of: datetime


def _moment(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, UTC)


@dataclass(frozen=True)
class StoredEvent:
    """The fields of a stored event a profile reads."""

    event_id: str
    person_id: str
    event: str
    session_id: str
    timestamp_ms: int
    properties: Mapping[str, Any]


class ProfileBook:
    """Every person's profile, in memory."""

    def __init__(self, settings: ProfileSettings, engagement: EngagementSettings) -> None:
        self.settings = settings
        self.windows_ms = {name: int(length.total_seconds() * 1000) for name, length in settings.durations.items()}
        self.weights = Weights.of(engagement)
        # Hours kept: enough for the longest window and the engagement window.
        self.keep_ms = max([*self.windows_ms.values(), self.weights.window_ms])
        self.profiles: dict[str, Profile] = {}

    def __len__(self) -> int:
        return len(self.profiles)

    def get(self, person_id: str) -> Profile | None:
        return self.profiles.get(person_id)

    # -- changes ----------------------------------------------------------------------

    def merge(self, merges: Iterable[tuple[str, str]]) -> None:
        """Apply ``(old, new)`` person merges, in order."""
        for old, new in merges:
            merged = self.profiles.pop(old, None)
            if merged is None:
                continue
            target = self.profiles.get(new)
            if target is None:
                merged.person_id = new
                self.profiles[new] = merged
            else:
                target.absorb(merged)

    def apply(self, event: StoredEvent) -> None:
        """Count one stored event (with its resolved person and session)."""
        profile = self.profiles.get(event.person_id)
        if profile is None:
            profile = Profile(event.person_id, event.timestamp_ms, event.timestamp_ms)
            self.profiles[event.person_id] = profile
        else:
            profile.first_seen_ms = min(profile.first_seen_ms, event.timestamp_ms)
            profile.last_seen_ms = max(profile.last_seen_ms, event.timestamp_ms)
        profile.events += 1
        profile.sessions.add(event.session_id)
        properties = event.properties
        revenue = properties.get(self.settings.revenue_property)
        if isinstance(revenue, int | float) and not isinstance(revenue, bool):
            profile.revenue += revenue
        for key in self.settings.properties:
            if key in properties and properties[key] is not None:
                latest = profile.last_values.get(key)
                if latest is None or (event.timestamp_ms, event.event_id) > latest[:2]:
                    profile.last_values[key] = (event.timestamp_ms, event.event_id, properties[key])
        hour = hour_of(event.timestamp_ms)
        hours = profile.counts.setdefault(event.event, {})
        hours[hour] = hours.get(hour, 0) + 1
        weight = self.weights.weight(event.event, properties.get("signal") == "passive")
        if weight:
            profile.engagement[hour] = profile.engagement.get(hour, 0.0) + weight

    def set_person(self, person_id: str, user_id: str | None, traits: dict[str, Any]) -> None:
        profile = self.profiles.get(person_id)
        if profile is not None:
            profile.user_id = user_id
            profile.traits = traits

    def forget_old(self, now_ms: int) -> None:
        """Drop the hours no window reaches any more, for every profile."""
        oldest = hour_of(now_ms) - self.keep_ms
        for profile in self.profiles.values():
            profile.forget_before(oldest)

    # -- reading ----------------------------------------------------------------------

    def engagement_score(self, profile: Profile, now_ms: int) -> float:
        now_hour = hour_of(now_ms)
        start = now_hour - self.weights.window_ms
        return sum(
            weight * self.weights.decay(max(0, now_hour - hour))
            for hour, weight in profile.engagement.items()
            if hour >= start
        )

    def view(self, profile: Profile, now: datetime | None = None) -> ProfileView:
        moment = now or datetime.now(UTC)
        now_ms = int(moment.timestamp() * 1000)
        now_hour = hour_of(now_ms)
        counts: dict[str, dict[str, int]] = {}
        for window, length in self.windows_ms.items():
            start = now_hour - length
            in_window = {
                event: total
                for event, hours in profile.counts.items()
                if (total := sum(count for hour, count in hours.items() if hour >= start))
            }
            counts[window] = dict(sorted(in_window.items()))
        return ProfileView(
            person_id=profile.person_id,
            user_id=profile.user_id,
            traits=profile.traits,
            first_seen=_moment(profile.first_seen_ms),
            last_seen=_moment(profile.last_seen_ms),
            events=profile.events,
            sessions=len(profile.sessions),
            revenue=round(profile.revenue, 6),
            engagement_score=round(self.engagement_score(profile, now_ms), 6),
            counts=counts,
            last_values={key: value for key, (_, _, value) in sorted(profile.last_values.items())},
            scores=dict(profile.scores),
            as_of=moment,
        )
