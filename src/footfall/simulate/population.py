"""Who the users are and when they visit.

The population is drawn once for the whole run (cheap: a few numbers per
user); users are numbered in order of arrival. Visits are drawn per cohort of
users as an inhomogeneous Poisson process: a homogeneous process at the peak
rate, thinned by the weekday and hour-of-day curve in the user's local time, cut
off at the user's (latent) churn time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from footfall.simulate.site import CATEGORIES_TABLE
from footfall.simulate.world import (
    CHANNEL,
    COUNTRY,
    DEVICE,
    MS_PER_DAY,
    MS_PER_HOUR,
    PEAK_ACTIVITY,
    PERSONA,
    PLANS,
    SECOND_DEVICE_TYPE,
    SIGNUP_METHODS,
    VIEWPORT,
    BoolArray,
    FloatArray,
    IntArray,
    relative_activity,
)

# Visits closer than this merge into one; with sessions capped well below it,
# the gap between two visits always exceeds a 30-minute session timeout.
MIN_VISIT_SPACING_MS = 4 * MS_PER_HOUR
# Spread of the per-user activity multiplier (lognormal sigma): some users of a
# persona visit far more often than others.
ACTIVITY_SPREAD = 0.5
# Users pick their favourite categories from a Dirichlet with this
# concentration: below 1, most users care about two or three categories.
CATEGORY_CONCENTRATION = 0.6
# Chance that the first session of a would-be member is the one where they sign
# up; otherwise it is a later one (geometric).
SIGNUP_SESSION_CHANCE = 0.45


@dataclass(frozen=True)
class Population:
    """Per-user draws, index = user number (arrival order). Devices and
    viewports have two columns: the first device and a possible second one."""

    persona: IntArray
    channel: IntArray
    country: IntArray
    arrival_ms: IntArray
    churn_ms: IntArray  # latent churn time; may lie beyond the period
    activity: FloatArray  # multiplier of the persona's session rate
    device: IntArray  # (users, 2) rows of DEVICES_TABLE
    viewport: IntArray  # (users, 2) rows of VIEWPORTS_TABLE
    category_cdf: FloatArray  # (users, categories) cumulative category affinity
    will_sign_up: BoolArray
    signup_ordinal: IntArray  # the session in which a would-be member signs up
    uses_second_device: BoolArray
    plan: IntArray
    signup_method: IntArray
    anonymous_ids: pa.Array  # user u's device d is ``anonymous_ids[2 * u + d]``

    @property
    def size(self) -> int:
        return int(self.persona.size)


def draw_population(users: int, start_ms: int, end_ms: int, rng: np.random.Generator) -> Population:
    country = rng.choice(len(COUNTRY), users, p=COUNTRY.share / COUNTRY.share.sum())
    arrival = _draw_arrivals(
        COUNTRY.utc_offset_minutes[country].astype(np.int64), start_ms, end_ms, rng
    )
    order = np.argsort(arrival, kind="stable")
    country, arrival = country[order], arrival[order]

    persona = rng.choice(len(PERSONA), users, p=PERSONA.share / PERSONA.share.sum())
    channel = rng.choice(len(CHANNEL), users, p=CHANNEL.share / CHANNEL.share.sum())
    lifetime_days = rng.exponential(1.0 / PERSONA.churn_per_day[persona])
    churn = arrival + (lifetime_days * MS_PER_DAY).astype(np.int64)
    activity = rng.lognormal(-(ACTIVITY_SPREAD**2) / 2, ACTIVITY_SPREAD, users)

    first_device = rng.choice(len(DEVICE), users, p=DEVICE.share / DEVICE.share.sum())
    second_device = _device_of_type(SECOND_DEVICE_TYPE[DEVICE.device_type[first_device]], rng)
    device = np.stack([first_device, second_device], axis=1)
    viewport = np.stack(
        [_viewport_for(DEVICE.device_type[device[:, slot]], rng) for slot in (0, 1)], axis=1
    )

    affinity = rng.dirichlet(np.full(len(CATEGORIES_TABLE), CATEGORY_CONCENTRATION), users)
    category_cdf = np.cumsum(affinity, axis=1)
    category_cdf[:, -1] = 1.0  # guard against rounding below 1

    will_sign_up = rng.random(users) < PERSONA.signup_rate[persona]
    signup_ordinal = rng.geometric(SIGNUP_SESSION_CHANCE, users) - 1
    uses_second_device = will_sign_up & (rng.random(users) < PERSONA.second_device_rate[persona])
    plan = np.where(
        rng.random(users) < PERSONA.premium_share[persona],
        PLANS.index("premium"),
        PLANS.index("free"),
    )
    signup_method = rng.choice(len(SIGNUP_METHODS), users, p=[0.6, 0.3, 0.1])
    anonymous_ids = random_uuids(2 * users, rng)
    return Population(
        persona=persona,
        channel=channel,
        country=country,
        arrival_ms=arrival,
        churn_ms=churn,
        activity=activity,
        device=device,
        viewport=viewport,
        category_cdf=category_cdf,
        will_sign_up=will_sign_up,
        signup_ordinal=signup_ordinal,
        uses_second_device=uses_second_device,
        plan=plan,
        signup_method=signup_method,
        anonymous_ids=anonymous_ids,
    )


def _draw_arrivals(
    utc_offsets_minutes: IntArray, start_ms: int, end_ms: int, rng: np.random.Generator
) -> IntArray:
    """First-visit times over the whole period, following weekday and hour of day."""
    arrival = np.empty(utc_offsets_minutes.size, dtype=np.int64)
    pending = np.arange(utc_offsets_minutes.size)
    while pending.size:
        candidate = start_ms + (rng.random(pending.size) * (end_ms - start_ms)).astype(np.int64)
        accepted = rng.random(pending.size) * PEAK_ACTIVITY < relative_activity(
            candidate, utc_offsets_minutes[pending]
        )
        arrival[pending[accepted]] = candidate[accepted]
        pending = pending[~accepted]
    return arrival


def _device_of_type(device_types: IntArray, rng: np.random.Generator) -> IntArray:
    """A device row of each given type, by the devices' shares within the type."""
    device = np.empty(device_types.size, dtype=np.int64)
    for device_type in np.unique(device_types):
        rows = np.flatnonzero(DEVICE.device_type == device_type)
        members = device_types == device_type
        shares = DEVICE.share[rows] / DEVICE.share[rows].sum()
        device[members] = rng.choice(rows, int(members.sum()), p=shares)
    return device


def _viewport_for(device_types: IntArray, rng: np.random.Generator) -> IntArray:
    viewport = np.empty(device_types.size, dtype=np.int64)
    for device_type in np.unique(device_types):
        rows = np.flatnonzero(VIEWPORT.device_type == device_type)
        members = device_types == device_type
        viewport[members] = rng.choice(rows, int(members.sum()))
    return viewport


def random_uuids(count: int, rng: np.random.Generator) -> pa.Array:
    """``count`` random (version 4) UUID strings, as browsers mint anonymous ids."""
    raw = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = pa.array(np.frombuffer(raw.tobytes().hex().encode(), dtype="S32")).cast(pa.string())
    parts = [
        pc.utf8_slice_codeunits(hexed, a, b)
        for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))
    ]
    return pc.binary_join_element_wise(*parts, "-")


@dataclass(frozen=True)
class Visits:
    """Sessions of a cohort, sorted by user and start time."""

    user: IntArray  # population index
    start_ms: IntArray
    ordinal: IntArray  # 0 for a user's first session
    channel: IntArray  # how this visit arrived

    @property
    def size(self) -> int:
        return int(self.user.size)


def schedule_visits(
    population: Population, users: IntArray, end_ms: int, rng: np.random.Generator
) -> Visits:
    """Session start times of ``users``: the first at arrival, returns until churn or the period's end."""
    arrival = population.arrival_ms[users]
    active_until = np.minimum(population.churn_ms[users], end_ms)
    active_days = np.maximum(active_until - arrival, 0) / MS_PER_DAY
    rate = PERSONA.sessions_per_day[population.persona[users]] * population.activity[users]

    candidates = rng.poisson(rate * PEAK_ACTIVITY * active_days)
    candidate_user = np.repeat(np.arange(users.size), candidates)
    candidate_time = arrival[candidate_user] + (
        rng.random(candidate_user.size) * (active_until - arrival)[candidate_user]
    ).astype(np.int64)
    offsets = COUNTRY.utc_offset_minutes[population.country[users]].astype(np.int64)
    kept = rng.random(candidate_user.size) * PEAK_ACTIVITY < relative_activity(
        candidate_time, offsets[candidate_user]
    )

    local_user = np.concatenate([np.arange(users.size), candidate_user[kept]])
    start = np.concatenate([arrival, candidate_time[kept]])
    order = np.lexsort((start, local_user))
    local_user, start = local_user[order], start[order]
    first_of_user = np.ones(local_user.size, dtype=bool)
    first_of_user[1:] = local_user[1:] != local_user[:-1]
    # Comparing with the previous candidate (kept or not) is enough: it starts no
    # earlier than the last kept visit, so kept visits end up spaced too.
    spaced = first_of_user.copy()
    spaced[1:] |= np.diff(start) >= MIN_VISIT_SPACING_MS
    local_user, start, first_of_user = local_user[spaced], start[spaced], first_of_user[spaced]

    first_index = np.maximum.accumulate(np.where(first_of_user, np.arange(local_user.size), 0))
    ordinal = np.arange(local_user.size) - first_index
    returning_channel = rng.choice(
        len(CHANNEL), local_user.size, p=CHANNEL.return_share / CHANNEL.return_share.sum()
    )
    user = users[local_user]
    channel = np.where(ordinal == 0, population.channel[user], returning_channel)
    return Visits(user=user, start_ms=start, ordinal=ordinal, channel=channel)
