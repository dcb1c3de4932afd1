"""The generator: a world drawn once, then users simulated cohort by cohort.

Users are split into fixed cohorts of ``COHORT_USERS`` in arrival order. Each
cohort has its own random stream (``[seed, COHORT_STREAM, cohort]``), so a
cohort's events do not depend on how output is chunked, and memory stays
bounded by one cohort's events (about half a million) whatever the size of
the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from footfall.simulate.accounts import Accounts, open_accounts
from footfall.simulate.browsing import Pages, Shopper, walk
from footfall.simulate.emit import EventFrame, Orders, emit_events, place_orders
from footfall.simulate.population import Population, Visits, draw_population, schedule_visits
from footfall.simulate.site import (
    CATEGORY_PAGE,
    PRODUCT_PAGE,
    SEARCH_PAGE,
    SiteMap,
    build_catalogue,
)
from footfall.simulate.tables import CohortView, Dictionaries
from footfall.simulate.world import IntArray

COHORT_USERS = 10_000
CATALOGUE_PRODUCTS = 200
# Independent random streams, so that changing how one part draws numbers does
# not reshuffle the others.
CATALOGUE_STREAM, POPULATION_STREAM, COHORT_STREAM = range(3)


@dataclass(frozen=True)
class Period:
    start_ms: int
    end_ms: int

    @classmethod
    def of(cls, start_ms: int, days: int) -> Period:
        return cls(start_ms, start_ms + days * int(timedelta(days=1).total_seconds() * 1000))


@dataclass(frozen=True)
class Cohort:
    index: int
    first_user: int
    user_count: int
    visits: Visits
    pages: Pages
    accounts: Accounts
    orders: Orders
    events: EventFrame
    view: CohortView


@dataclass(frozen=True)
class World:
    """What is drawn once per simulation: the shop and its population."""

    seed: int
    period: Period
    shopper: Shopper
    sitemap: SiteMap
    population: Population
    dictionaries: Dictionaries

    @classmethod
    def draw(cls, seed: int, users: int, period: Period, project_id: str) -> World:
        catalogue = build_catalogue(
            np.random.default_rng([seed, CATALOGUE_STREAM]), CATALOGUE_PRODUCTS
        )
        sitemap = SiteMap.for_catalogue(catalogue)
        population = draw_population(
            users, period.start_ms, period.end_ms, np.random.default_rng([seed, POPULATION_STREAM])
        )
        return cls(
            seed=seed,
            period=period,
            shopper=Shopper.for_catalogue(catalogue),
            sitemap=sitemap,
            population=population,
            dictionaries=Dictionaries.build(seed, project_id, users, catalogue, sitemap),
        )

    def cohorts(self) -> Iterator[Cohort]:
        for index, first_user in enumerate(range(0, self.population.size, COHORT_USERS)):
            yield self.cohort(
                index, first_user, min(COHORT_USERS, self.population.size - first_user)
            )

    def cohort(self, index: int, first_user: int, user_count: int) -> Cohort:
        rng = np.random.default_rng([self.seed, COHORT_STREAM, index])
        end_ms = self.period.end_ms
        users = np.arange(first_user, first_user + user_count)
        visits = schedule_visits(self.population, users, end_ms, rng)
        pages = walk(visits, self.population, self.shopper, rng)
        accounts = open_accounts(
            self.population, first_user, user_count, visits, pages, end_ms, rng
        )
        orders = place_orders(visits, pages, self.shopper)
        events = emit_events(visits, pages, accounts, orders, self.population, end_ms, rng)
        address = self._addresses(pages)
        view = CohortView(
            dictionaries=self.dictionaries,
            population=self.population,
            visits=visits,
            pages=pages,
            address=address,
            referrer=self._referrers(visits, pages, address),
            orders=orders,
            events=events,
        )
        return Cohort(index, first_user, user_count, visits, pages, accounts, orders, events, view)

    def _addresses(self, pages: Pages) -> IntArray:
        subject = np.select(
            [pages.kind == CATEGORY_PAGE, pages.kind == PRODUCT_PAGE, pages.kind == SEARCH_PAGE],
            [pages.category, pages.product, pages.query],
            0,
        )
        return self.sitemap.address(pages.kind, subject)

    def _referrers(self, visits: Visits, pages: Pages, address: IntArray) -> IntArray:
        """The previous page's url, or on a visit's first page the channel's referrer."""
        previous = np.concatenate([[0], address[:-1]])
        external = len(self.sitemap.urls) + visits.channel[pages.visit]
        referrer: IntArray = np.where(pages.is_first, external, previous)
        return referrer
