"""What users do within a visit: which pages they see, in what order, for how long.

A visit is a walk over page kinds (a Markov chain whose transition weights are
``NEXT_KIND_WEIGHTS``), with decisions on the way: add to cart on a product
page, go to checkout from a cart, buy at checkout. All visits of a cohort walk
together, one page per step, so each step is a handful of numpy operations over
every visit still going.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from footfall.simulate.population import Population, Visits
from footfall.simulate.site import (
    CART_PAGE,
    CATEGORIES_TABLE,
    CATEGORY_PAGE,
    CHECKOUT_PAGE,
    COMPLEMENTS_PER_PRODUCT,
    EXIT,
    HOME_PAGE,
    NEXT_KIND_WEIGHTS,
    PAGE_KIND,
    PRODUCT_PAGE,
    QUERIES_PER_CATEGORY,
    SEARCH_PAGE,
    Catalogue,
)
from footfall.simulate.world import CHANNEL, PERSONA, BoolArray, FloatArray, IntArray

MAX_PAGES_PER_VISIT = 30
# Dwell per page is lognormal around the persona's median, clipped: under two
# seconds nobody reads, over five minutes the tab was left open. With the page
# cap this bounds a visit well below the spacing between visits.
DWELL_SPREAD = 0.7
MIN_DWELL_MS, MAX_DWELL_MS = 2_000, 300_000
MIN_PAGE_LOAD_MS, MAX_PAGE_LOAD_MS = 300, 1_500
# After adding to cart: chance of going straight to the cart, and of following
# a "goes well with" suggestion instead.
GO_TO_CART_AFTER_ADD = 0.5
FOLLOW_CROSS_SELL = 0.3
# From the cart, chance that a product click follows a "goes well with" suggestion.
FOLLOW_CART_SUGGESTION = 0.5
# From a failed checkout, chance of going back to the cart.
BACK_TO_CART = 0.5
# From a product page, chance that the next product is from the same category.
STAY_IN_CATEGORY = 0.7
# Chance that a return visit opens on a complement of the user's last purchase
# (the "you might also like" email or banner works).
RETURN_TO_COMPLEMENT = 0.5


@dataclass(frozen=True)
class Shopper:
    """The catalogue as each persona sees it: per (persona, category) the
    cumulative chance of viewing each product of the category."""

    catalogue: Catalogue
    product_cdf: FloatArray  # (personas, categories, products per category)

    @classmethod
    def for_catalogue(cls, catalogue: Catalogue) -> Shopper:
        per_category = catalogue.products_per_category
        shape = (len(CATEGORIES_TABLE), per_category)
        weights = (
            catalogue.popularity.reshape(shape)[None]
            * np.where(
                catalogue.on_sale.reshape(shape)[None], PERSONA.sale_affinity[:, None, None], 1.0
            )
            # Price-sensitive personas look at cheaper products too, not only buy them.
            * catalogue.relative_price.reshape(shape)[None]
            ** (-0.5 * PERSONA.price_sensitivity[:, None, None])
        )
        cdf = np.cumsum(weights, axis=2)
        return cls(catalogue, cdf / cdf[:, :, -1:])

    def popular_product(
        self, persona: IntArray, category: IntArray, rng: np.random.Generator
    ) -> IntArray:
        index = pick(self.product_cdf[persona, category], rng)
        product: IntArray = category * self.catalogue.products_per_category + index
        return product

    def complement_of(self, product: IntArray, rng: np.random.Generator) -> IntArray:
        complement: IntArray = self.catalogue.complements[
            product, rng.integers(0, COMPLEMENTS_PER_PRODUCT, product.size)
        ]
        return complement

    def another_if_same(self, product: IntArray, current: IntArray) -> IntArray:
        """``product``, or where it is the page being left, its neighbour in the category."""
        per_category = self.catalogue.products_per_category
        neighbour = product - product % per_category + (product + 1) % per_category
        different: IntArray = np.where(product == current, neighbour, product)
        return different

    def cart_chance(self, persona: IntArray, product: IntArray) -> FloatArray:
        chance = (
            PERSONA.cart_rate[persona]
            * self.catalogue.relative_price[product] ** -PERSONA.price_sensitivity[persona]
            * np.where(
                self.catalogue.on_sale[product], np.sqrt(PERSONA.sale_affinity[persona]), 1.0
            )
        )
        clipped: FloatArray = np.clip(chance, 0.0, 0.95)
        return clipped


def pick(cdf: FloatArray, rng: np.random.Generator) -> IntArray:
    """One index per row of a matrix of cumulative probabilities (last column 1)."""
    draws = rng.random(size=len(cdf))
    index: IntArray = np.minimum((draws[:, None] >= cdf).sum(axis=1), cdf.shape[1] - 1)
    return index


def pick_weighted(weights: FloatArray, rng: np.random.Generator) -> IntArray:
    cdf = np.cumsum(weights, axis=1)
    return pick(cdf / cdf[:, -1:], rng)


@dataclass(frozen=True)
class Pages:
    """Page views of a cohort, sorted by visit and position in the visit."""

    visit: IntArray
    position: IntArray
    kind: IntArray
    product: IntArray  # -1 unless a product page
    category: IntArray  # of the product, category or search; -1 otherwise
    query: IntArray  # -1 unless a search page
    added_to_cart: BoolArray
    purchased: BoolArray
    next_kind: IntArray  # EXIT on a visit's last page
    cart_round: IntArray  # 0 until the visit's first purchase, then 1, ...
    start_ms: IntArray
    dwell_ms: IntArray

    @property
    def size(self) -> int:
        return int(self.visit.size)

    @property
    def is_first(self) -> BoolArray:
        first: BoolArray = self.position == 0
        return first


@dataclass
class _Walkers:
    """The visits still browsing, and where each one is."""

    visit: IntArray
    kind: IntArray
    product: IntArray  # -1 unless on a product page
    category: IntArray  # -1 unless on a category, product or search page
    query: IntArray  # -1 unless on a search page
    cart_items: IntArray  # in the cart now
    cart_round: IntArray  # purchases so far in this visit
    last_added: IntArray  # the product added to cart most recently, -1 if none

    def moved_on(
        self,
        going: BoolArray,
        kind: IntArray,
        product: IntArray,
        category: IntArray,
        query: IntArray,
    ) -> _Walkers:
        """The walkers that go on, on their next pages."""
        next_kind = kind[going]
        shows_category = np.isin(next_kind, (CATEGORY_PAGE, PRODUCT_PAGE, SEARCH_PAGE))
        return _Walkers(
            visit=self.visit[going],
            kind=next_kind,
            product=np.where(next_kind == PRODUCT_PAGE, product[going], -1),
            category=np.where(shows_category, category[going], -1),
            query=np.where(next_kind == SEARCH_PAGE, query[going], -1),
            cart_items=self.cart_items[going],
            cart_round=self.cart_round[going],
            last_added=self.last_added[going],
        )


@dataclass(frozen=True)
class _Decisions:
    """What the walkers did on the page they are on, and where they go next."""

    added: BoolArray
    purchased: BoolArray
    next_kind: IntArray  # EXIT for those who leave
    suggested: BoolArray  # the next product page follows a "goes well with" suggestion


def walk(
    visits: Visits, population: Population, shopper: Shopper, rng: np.random.Generator
) -> Pages:
    """Every visit's pages, with its decisions, times and dwell."""
    persona_of_visit = population.persona[visits.user]
    category_cdf = population.category_cdf[visits.user]
    walkers = _land(visits, persona_of_visit, category_cdf, shopper, rng)

    steps: list[tuple[np.ndarray, ...]] = []
    for position in range(MAX_PAGES_PER_VISIT):
        persona = persona_of_visit[walkers.visit]
        decisions = _decide(
            walkers, persona, shopper, rng, last_page=position == MAX_PAGES_PER_VISIT - 1
        )
        steps.append(
            (
                walkers.visit,
                np.full(walkers.visit.size, position),
                walkers.kind,
                walkers.product,
                walkers.category,
                walkers.query,
                decisions.added,
                decisions.purchased,
                decisions.next_kind,
                walkers.cart_round,
            )
        )
        walkers.cart_items = np.where(decisions.purchased, 0, walkers.cart_items + decisions.added)
        walkers.cart_round = walkers.cart_round + decisions.purchased
        walkers.last_added = np.where(decisions.added, walkers.product, walkers.last_added)
        product, category, query = _next_subjects(
            walkers, decisions, persona, category_cdf[walkers.visit], shopper, rng
        )
        walkers = walkers.moved_on(
            decisions.next_kind != EXIT, decisions.next_kind, product, category, query
        )
        if walkers.visit.size == 0:
            break

    columns = [np.concatenate(column) for column in zip(*steps, strict=True)]
    order = np.lexsort((columns[1], columns[0]))
    (
        visit,
        position_in_visit,
        kind,
        product,
        category,
        query,
        added,
        purchased,
        next_kind,
        cart_round,
    ) = (column[order] for column in columns)
    product, category = _open_returns_on_complements(
        visits, visit, position_in_visit, kind, product, category, added, purchased, shopper, rng
    )
    start_ms, dwell_ms = _lay_out_in_time(
        visits, visit, position_in_visit, kind, persona_of_visit, rng
    )
    return Pages(
        visit=visit,
        position=position_in_visit,
        kind=kind,
        product=product,
        category=category,
        query=query,
        added_to_cart=added,
        purchased=purchased,
        next_kind=next_kind,
        cart_round=cart_round,
        start_ms=start_ms,
        dwell_ms=dwell_ms,
    )


def _land(
    visits: Visits,
    persona: IntArray,
    category_cdf: FloatArray,
    shopper: Shopper,
    rng: np.random.Generator,
) -> _Walkers:
    """First pages: the kind by the visit's channel, the subject by the user's tastes."""
    landing_weights = np.stack(
        [CHANNEL.land_home, CHANNEL.land_category, CHANNEL.land_product], axis=1
    )
    kind = np.array([HOME_PAGE, CATEGORY_PAGE, PRODUCT_PAGE])[
        pick_weighted(landing_weights[visits.channel], rng)
    ]
    category = pick(category_cdf, rng)
    none = np.full(visits.size, -1)
    return _Walkers(
        visit=np.arange(visits.size),
        kind=kind,
        product=np.where(kind == PRODUCT_PAGE, shopper.popular_product(persona, category, rng), -1),
        category=np.where(kind == HOME_PAGE, -1, category),
        query=none,
        cart_items=np.zeros(visits.size, dtype=np.int64),
        cart_round=np.zeros(visits.size, dtype=np.int64),
        last_added=none,
    )


def _decide(
    walkers: _Walkers,
    persona: IntArray,
    shopper: Shopper,
    rng: np.random.Generator,
    last_page: bool,
) -> _Decisions:
    """Add to cart? Buy? Go on, and to what kind of page?

    The next kind is drawn from ``NEXT_KIND_WEIGHTS``; decisions override it:
    checkout follows a decision to check out, an add to cart often leads to the
    cart or a suggestion, an order to "you may also like", a failed checkout
    back to the cart.
    """
    count = walkers.visit.size
    kind = walkers.kind
    added = (kind == PRODUCT_PAGE) & (
        rng.random(count) < shopper.cart_chance(persona, np.maximum(walkers.product, 0))
    )
    in_cart = walkers.cart_items + added
    at_checkout = kind == CHECKOUT_PAGE
    purchased = at_checkout & (rng.random(count) < PERSONA.purchase_rate[persona])
    to_checkout = (
        (kind == CART_PAGE) & (in_cart > 0) & (rng.random(count) < PERSONA.checkout_rate[persona])
    )
    continue_chance = PERSONA.continue_rate[persona] * PAGE_KIND.continue_factor[kind]
    continues = (to_checkout | (rng.random(count) < continue_chance)) & (not last_page)

    weights = NEXT_KIND_WEIGHTS[kind]
    weights[:, SEARCH_PAGE] *= PERSONA.search_affinity[persona]
    next_kind = pick_weighted(weights, rng)
    choice = rng.random(count)
    to_cart = added & (choice < GO_TO_CART_AFTER_ADD)
    cross_sell = added & ~to_cart & (choice < GO_TO_CART_AFTER_ADD + FOLLOW_CROSS_SELL)
    next_kind = np.select(
        [to_checkout, purchased, to_cart, cross_sell, at_checkout & (choice < BACK_TO_CART)],
        [CHECKOUT_PAGE, PRODUCT_PAGE, CART_PAGE, PRODUCT_PAGE, CART_PAGE],
        next_kind,
    )
    next_kind = np.where(continues, next_kind, EXIT)
    from_cart = (
        (kind == CART_PAGE) & (next_kind == PRODUCT_PAGE) & (choice < FOLLOW_CART_SUGGESTION)
    )
    last_added = np.where(added, walkers.product, walkers.last_added)
    suggested = (cross_sell | purchased | from_cart) & (last_added >= 0)
    return _Decisions(added, purchased, next_kind, suggested)


def _next_subjects(
    walkers: _Walkers,
    decisions: _Decisions,
    persona: IntArray,
    category_cdf: FloatArray,
    shopper: Shopper,
    rng: np.random.Generator,
) -> tuple[IntArray, IntArray, IntArray]:
    """Product, category and search query of each walker's next page.

    Category and search pages lead on within their category, product pages
    mostly do; otherwise the user's favourite categories decide. Suggestions
    show a complement of the product last added to the cart.
    """
    count = walkers.visit.size
    keeps_category = np.isin(walkers.kind, (CATEGORY_PAGE, SEARCH_PAGE)) | (
        (walkers.kind == PRODUCT_PAGE) & (rng.random(count) < STAY_IN_CATEGORY)
    )
    category = np.where(
        keeps_category & (walkers.category >= 0), walkers.category, pick(category_cdf, rng)
    )
    product = np.where(
        decisions.suggested,
        shopper.complement_of(np.maximum(walkers.last_added, 0), rng),
        shopper.popular_product(persona, category, rng),
    )
    product = shopper.another_if_same(product, walkers.product)
    category = np.where(
        decisions.next_kind == PRODUCT_PAGE, shopper.catalogue.category[product], category
    )
    query = category * QUERIES_PER_CATEGORY + rng.integers(0, QUERIES_PER_CATEGORY, count)
    return product, category, query


def _open_returns_on_complements(
    visits: Visits,
    visit: IntArray,
    position: IntArray,
    kind: IntArray,
    product: IntArray,
    category: IntArray,
    added: IntArray,
    purchased: IntArray,
    shopper: Shopper,
    rng: np.random.Generator,
) -> tuple[IntArray, IntArray]:
    """Show some returning buyers a complement of what they bought last.

    The first product page of a later visit becomes a complement of the last
    product ordered in an earlier visit. Only pages without an add to cart are
    changed, so orders (and so the chain of "last purchase") stay as walked.
    """
    # The last product added before each purchase is the order's reference product.
    added_so_far = np.where(added.astype(bool), product, -1)
    group_start = np.flatnonzero(position == 0)
    carried = np.maximum.accumulate(np.where(added_so_far >= 0, np.arange(visit.size), -1))
    carried_ok = carried >= np.repeat(group_start, np.diff(np.append(group_start, visit.size)))
    last_added_at = np.where(carried_ok, product[np.maximum(carried, 0)], -1)
    purchase_pages = np.flatnonzero(purchased.astype(bool))
    last_of_visit = np.ones(purchase_pages.size, dtype=bool)
    last_of_visit[:-1] = visit[purchase_pages][1:] != visit[purchase_pages][:-1]
    last_purchase_pages = purchase_pages[last_of_visit]
    bought = np.full(visits.size, -1)
    bought[visit[last_purchase_pages]] = last_added_at[last_purchase_pages]

    # Visits are sorted by user and time: carry the last purchase forward within a user.
    index = np.arange(visits.size)
    latest = np.maximum.accumulate(np.where(bought >= 0, index, -1))
    previous = np.concatenate([[-1], latest[:-1]])
    first_visit_of_user = index - visits.ordinal
    previous_bought = np.where(previous >= first_visit_of_user, bought[np.maximum(previous, 0)], -1)

    product_page = (kind == PRODUCT_PAGE) & ~added.astype(bool)
    first_product_page = np.zeros(visit.size, dtype=bool)
    candidates = np.flatnonzero(product_page)
    _, first_of_visit = np.unique(visit[candidates], return_index=True)
    first_product_page[candidates[first_of_visit]] = True
    reminded = (
        first_product_page
        & (previous_bought[visit] >= 0)
        & (rng.random(visit.size) < RETURN_TO_COMPLEMENT)
    )
    complement = shopper.complement_of(np.maximum(previous_bought[visit], 0), rng)
    product = np.where(reminded, complement, product)
    category = np.where(reminded, shopper.catalogue.category[np.maximum(product, 0)], category)
    return product, category


def _lay_out_in_time(
    visits: Visits,
    visit: IntArray,
    position: IntArray,
    kind: IntArray,
    persona_of_visit: IntArray,
    rng: np.random.Generator,
) -> tuple[IntArray, IntArray]:
    """Start and dwell of each page: pages follow one another, a page load apart."""
    median = PERSONA.dwell_seconds[persona_of_visit[visit]] * PAGE_KIND.dwell_factor[kind] * 1000
    dwell = np.clip(
        median * rng.lognormal(0.0, DWELL_SPREAD, visit.size), MIN_DWELL_MS, MAX_DWELL_MS
    )
    dwell_ms = dwell.astype(np.int64)
    step = dwell_ms + rng.integers(MIN_PAGE_LOAD_MS, MAX_PAGE_LOAD_MS, visit.size)
    elapsed = np.cumsum(step) - step  # before this page, counted from the cohort's first page
    elapsed_at_visit_start = elapsed[position == 0]
    start_ms = visits.start_ms[visit] + elapsed - elapsed_at_visit_start[visit]
    return start_ms, dwell_ms
