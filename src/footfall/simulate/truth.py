"""Ground truth: what the simulator knows and analyses and models should recover.

``users`` has one row per simulated user with their latent persona, channel,
sign-up and churn. ``next_actions`` holds, for users who visit again in the
last ``NEXT_ACTION_WINDOW`` of the period, the first active event after the
cut-off: the label a next-action model trained on the events before the
cut-off should predict (and, as ``next_key_action``, the first one that is
not a click).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from footfall.events.record import TIMESTAMP
from footfall.simulate.generate import Cohort, World
from footfall.simulate.world import (
    CLICK,
    IS_ACTIVE_KIND,
    PURCHASE,
    SIGN_UP,
    BoolArray,
    IntArray,
)

NEXT_ACTION_WINDOW = timedelta(days=7)
IS_KEY_ACTION = IS_ACTIVE_KIND & (np.arange(IS_ACTIVE_KIND.size) != CLICK)

USERS_SCHEMA = pa.schema(
    [
        pa.field("anonymous_id", pa.string(), nullable=False),  # of the first device
        pa.field("user_id", pa.string()),  # null if the user never signed up
        pa.field("persona", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),  # acquisition channel
        pa.field("first_seen", TIMESTAMP, nullable=False),
        pa.field("signed_up_at", TIMESTAMP),
        pa.field(
            "churned", pa.bool_(), nullable=False
        ),  # the latent churn time fell within the period
        pa.field("churned_at", TIMESTAMP),
        pa.field("n_events", pa.int64(), nullable=False),
        pa.field("revenue", pa.float64(), nullable=False),
        pa.field("n_sessions", pa.int64(), nullable=False),
        pa.field("second_anonymous_id", pa.string()),  # of a second device, if one was used
    ]
)

NEXT_ACTIONS_SCHEMA = pa.schema(
    [
        pa.field("anonymous_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("cutoff", TIMESTAMP, nullable=False),
        pa.field(
            "next_action", pa.string()
        ),  # null if the user did nothing active after the cut-off
        pa.field("next_action_at", TIMESTAMP),
        # The first active event other than a click (almost every visit starts
        # with clicks, so ``next_action`` is nearly always "click"): search,
        # add_to_cart, checkout_started, purchase or sign_up; null if none.
        pa.field("next_key_action", pa.string()),
    ]
)


@dataclass(frozen=True)
class GroundTruth:
    users: pa.Table  # USERS_SCHEMA
    next_actions: pa.Table  # NEXT_ACTIONS_SCHEMA

    def write(self, directory: Path) -> list[Path]:
        """Write ``users.parquet`` and ``next_actions.parquet`` (creating the directory)."""
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, table in (("users", self.users), ("next_actions", self.next_actions)):
            path = directory / f"{name}.parquet"
            pq.write_table(table, path)
            written.append(path)
        return written

    @classmethod
    def concat(cls, parts: Sequence[tuple[pa.Table, pa.Table]]) -> GroundTruth:
        return cls(
            users=pa.concat_tables([users for users, _ in parts]).combine_chunks(),
            next_actions=pa.concat_tables([actions for _, actions in parts]).combine_chunks(),
        )


def next_action_cutoff_ms(world: World) -> int:
    window_ms = int(NEXT_ACTION_WINDOW.total_seconds() * 1000)
    return max(world.period.start_ms, world.period.end_ms - window_ms)


def truth_of_cohort(world: World, cohort: Cohort) -> tuple[pa.Table, pa.Table]:
    """The ground-truth rows of one cohort's users: (users, next actions)."""
    population, events, dictionaries = world.population, cohort.events, world.dictionaries
    end_ms = world.period.end_ms
    users = np.arange(cohort.first_user, cohort.first_user + cohort.user_count)
    local_user = events.user - cohort.first_user

    signed_up = cohort.accounts.signup_page >= 0
    user_ids = dictionaries.user_ids.take(pa.array(users, mask=~signed_up))
    used_second = np.bincount(local_user[events.device == 1], minlength=cohort.user_count) > 0
    purchases = events.kind == PURCHASE
    revenue_cents = cohort.orders.revenue_cents[cohort.orders.order_of_page[events.page[purchases]]]
    revenue = (
        np.bincount(local_user[purchases], weights=revenue_cents, minlength=cohort.user_count) / 100
    )
    signup_events = events.kind == SIGN_UP
    signed_up_at = np.zeros(cohort.user_count, dtype=np.int64)
    signed_up_at[local_user[signup_events]] = events.timestamp_ms[signup_events]
    churn_ms = population.churn_ms[users]
    churned = churn_ms < end_ms

    users_table = pa.table(
        {
            "anonymous_id": population.anonymous_ids.take(pa.array(2 * users)),
            "user_id": user_ids,
            "persona": dictionaries.persona_names.take(pa.array(population.persona[users])),
            "channel": dictionaries.channel_names.take(pa.array(population.channel[users])),
            "first_seen": pa.array(population.arrival_ms[users], TIMESTAMP),
            "signed_up_at": pa.array(signed_up_at, TIMESTAMP, mask=~signed_up),
            "churned": pa.array(churned),
            "churned_at": pa.array(churn_ms, TIMESTAMP, mask=~churned),
            "n_events": pa.array(np.bincount(local_user, minlength=cohort.user_count)),
            "revenue": pa.array(np.round(revenue, 2)),
            "n_sessions": pa.array(
                np.bincount(cohort.visits.user - cohort.first_user, minlength=cohort.user_count)
            ),
            "second_anonymous_id": population.anonymous_ids.take(
                pa.array(2 * users + 1, mask=~used_second)
            ),
        },
        schema=USERS_SCHEMA,
    )

    cutoff = next_action_cutoff_ms(world)
    visits_after = np.bincount(
        cohort.visits.user[cohort.visits.start_ms >= cutoff] - cohort.first_user,
        minlength=cohort.user_count,
    )
    returning = np.flatnonzero(visits_after > 0)
    after_cutoff = events.timestamp_ms >= cutoff
    next_kind, next_at = _first_per_user(cohort, IS_ACTIVE_KIND[events.kind] & after_cutoff)
    next_key_kind, _ = _first_per_user(cohort, IS_KEY_ACTION[events.kind] & after_cutoff)
    idle = next_kind[returning] < 0
    actions_table = pa.table(
        {
            "anonymous_id": users_table.column("anonymous_id").take(pa.array(returning)),
            "user_id": users_table.column("user_id").take(pa.array(returning)),
            "cutoff": pa.array(np.full(returning.size, cutoff), TIMESTAMP),
            "next_action": dictionaries.event_names.take(pa.array(next_kind[returning], mask=idle)),
            "next_action_at": pa.array(next_at[returning], TIMESTAMP, mask=idle),
            "next_key_action": dictionaries.event_names.take(
                pa.array(next_key_kind[returning], mask=next_key_kind[returning] < 0)
            ),
        },
        schema=NEXT_ACTIONS_SCHEMA,
    )
    return users_table, actions_table


def _first_per_user(cohort: Cohort, selected: BoolArray) -> tuple[IntArray, IntArray]:
    """Kind and time of each cohort user's first selected event; kind -1 if none.

    Events are in time order, so a user's first index among the selected is the earliest.
    """
    events = cohort.events
    rows = np.flatnonzero(selected)
    users, first = np.unique(events.user[rows] - cohort.first_user, return_index=True)
    kind = np.full(cohort.user_count, -1)
    at = np.zeros(cohort.user_count, dtype=np.int64)
    kind[users] = events.kind[rows[first]]
    at[users] = events.timestamp_ms[rows[first]]
    return kind, at
