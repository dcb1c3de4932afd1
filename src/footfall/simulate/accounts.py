"""Sign-ups and devices: when a user gets a user id, and on which device each visit happens.

A would-be member signs up in the visit their draw says or, if they buy
earlier, at their first checkout (an account is made to place the order).
Some members later shop on a second device as well: those visits start
anonymous under a new anonymous id until the user logs in (an ``identify``
with the same user id), which is what makes identity merging necessary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from footfall.simulate.browsing import Pages
from footfall.simulate.population import Population, Visits
from footfall.simulate.world import IntArray

NEVER = np.iinfo(np.int64).max
# Once a member has a second device, the chance that a later visit happens on it.
SECOND_DEVICE_VISIT_SHARE = 0.5
# Where in a page's dwell the sign-up form is submitted: at checkout before the
# order is placed, elsewhere halfway through the page.
SIGNUP_AT_CHECKOUT = 0.4
SIGNUP_ELSEWHERE = 0.5
LOGIN_AT = 0.5
# The sign_up track follows its identify by this much.
SIGNUP_EVENT_DELAY_MS = 50


@dataclass(frozen=True)
class Accounts:
    """Per cohort user (``user - first_user``) and per visit."""

    first_user: int
    signup_page: IntArray  # page of the sign-up, -1 if none
    signup_ms: IntArray  # NEVER if none
    login_page: IntArray  # first page on the second device (where the login happens), -1 if none
    login_ms: IntArray  # NEVER if none
    visit_device: IntArray  # 0 = first device, 1 = second device


def open_accounts(
    population: Population,
    first_user: int,
    user_count: int,
    visits: Visits,
    pages: Pages,
    end_ms: int,
    rng: np.random.Generator,
) -> Accounts:
    """Sign-ups, second devices and logins of one cohort of users.

    A sign-up too close to the end of the period to be recorded in full does
    not happen, so ``identify`` and ``sign_up`` always come as a pair.
    """
    local_user = visits.user - first_user
    visit_has_purchase = np.zeros(visits.size, dtype=bool)
    visit_has_purchase[pages.visit[pages.purchased]] = True

    # The sign-up visit: the drawn one, or the first with a purchase if that comes first.
    drawn = visits.ordinal == population.signup_ordinal[visits.user]
    signup_visit_by_draw = _first_visit_per_user(drawn, local_user, user_count)
    signup_visit_by_purchase = _first_visit_per_user(visit_has_purchase, local_user, user_count)
    # Visits are numbered in time order within a user, so the smaller index is the earlier.
    signup_visit = np.minimum(signup_visit_by_draw, signup_visit_by_purchase)
    members = population.will_sign_up[first_user : first_user + user_count] & (
        signup_visit < visits.size
    )
    at_purchase = members & (signup_visit == signup_visit_by_purchase)

    first_page_of_visit = np.flatnonzero(pages.position == 0)
    last_page_of_visit = np.append(first_page_of_visit[1:], pages.size) - 1
    first_purchase_page_of_visit = np.full(visits.size, pages.size)
    np.minimum.at(
        first_purchase_page_of_visit, pages.visit[pages.purchased], np.flatnonzero(pages.purchased)
    )

    visit = np.minimum(signup_visit, visits.size - 1)
    signup_page = np.where(
        at_purchase, first_purchase_page_of_visit[visit], last_page_of_visit[visit]
    )
    signup_page = np.where(members, signup_page, -1)
    fraction = np.where(at_purchase, SIGNUP_AT_CHECKOUT, SIGNUP_ELSEWHERE)
    signup_ms = _moment(pages, signup_page, fraction)
    recorded = signup_ms + SIGNUP_EVENT_DELAY_MS < end_ms
    members &= recorded
    signup_page = np.where(recorded, signup_page, -1)
    signup_ms = np.where(recorded, signup_ms, NEVER)

    # Later visits of members with a second device happen on it about half the time.
    uses_second = population.uses_second_device[visits.user] & members[local_user]
    after_signup = np.arange(visits.size) > signup_visit[local_user]
    on_second = uses_second & after_signup & (rng.random(visits.size) < SECOND_DEVICE_VISIT_SHARE)
    visit_device = on_second.astype(np.int64)
    first_second_visit = _first_visit_per_user(on_second, local_user, user_count)
    has_login = first_second_visit < visits.size
    login_page = np.where(
        has_login, first_page_of_visit[np.minimum(first_second_visit, visits.size - 1)], -1
    )
    login_ms = _moment(pages, login_page, np.full(user_count, LOGIN_AT))
    return Accounts(first_user, signup_page, signup_ms, login_page, login_ms, visit_device)


def _first_visit_per_user(flag: np.ndarray, local_user: IntArray, user_count: int) -> IntArray:
    """Index of each user's first visit with ``flag`` set; ``len(flag)`` if none."""
    first = np.full(user_count, flag.size)
    np.minimum.at(first, local_user[flag], np.flatnonzero(flag))
    return first


def _moment(pages: Pages, page: IntArray, fraction: np.ndarray) -> IntArray:
    """The instant ``fraction`` of the way through each page's dwell; NEVER where page is -1."""
    safe = np.maximum(page, 0)
    moment = pages.start_ms[safe] + (pages.dwell_ms[safe] * fraction).astype(np.int64)
    at: IntArray = np.where(page >= 0, moment, NEVER)
    return at
