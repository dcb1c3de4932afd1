"""From pages to events: what the tracker records while a page is open.

Each event kind is drawn for all pages of a cohort at once (counts per page,
then ``np.repeat``), as a block of rows that point back at their page. Times
are fractions of the page's dwell, so the order within a page holds whatever
the dwell: page_view first, page_leave last, add_to_cart before the click
that leaves the page.

The result, ``EventFrame``, is still numbers: kinds, page indexes, times,
element codes, coordinates. Strings are made only when a slice becomes an
Arrow table (``tables.py``), so ground truth can be computed without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from footfall.simulate.accounts import SIGNUP_EVENT_DELAY_MS, Accounts
from footfall.simulate.browsing import MAX_PAGES_PER_VISIT, Pages, Shopper, pick
from footfall.simulate.population import Population, Visits
from footfall.simulate.site import (
    ACCOUNT_ICON,
    ADD_TO_CART_BUTTON,
    CHECKOUT_PAGE,
    EXIT,
    LAYOUT,
    NAVIGATION_ELEMENT,
    PAGE_KIND,
    PLACE_ORDER_BUTTON,
    PRODUCT_PAGE,
    SEARCH_PAGE,
)
from footfall.simulate.world import (
    ADD_TO_CART,
    CHECKOUT_STARTED,
    CLICK,
    DESKTOP,
    DEVICE,
    HOVER,
    IDENTIFY,
    PAGE_LEAVE,
    PAGE_VIEW,
    PERSONA,
    PURCHASE,
    SCROLL,
    SEARCH,
    SIGN_UP,
    VIEW_PRODUCT,
    VIEWPORT,
    BoolArray,
    FloatArray,
    IntArray,
)

SCROLL_MILESTONES = np.array([25, 50, 75, 100])
# Scroll depth beyond the first screen is Beta-distributed around the persona's
# mean with this concentration; the stretch lets a share of readers reach the end.
SCROLL_CONCENTRATION = 3.0
SCROLL_STRETCH = 1.1
# A rage click: RAGE_CLICKS clicks on one spot, each a short gap after the last,
# jittered by up to RAGE_JITTER_PX per axis (so all within 30 px and 1 s).
RAGE_CLICKS = (3, 6)  # from, to (exclusive)
RAGE_GAP_MS = (80, 220)
RAGE_JITTER_PX = 10.0
HOVER_MEDIAN_MS, HOVER_SPREAD = 800.0, 0.8
SEARCH_RESULTS = (0, 48)
# Collectors receive events a few hundred milliseconds after they happen.
RECEIVE_DELAY_MS = (50, 900)


@dataclass(frozen=True)
class Orders:
    """Orders of a cohort, in page order; ``items`` of order i are
    ``items[item_offsets[i]:item_offsets[i + 1]]``."""

    page: IntArray
    number: IntArray  # 1 for a user's first order
    item_offsets: IntArray
    items: IntArray
    revenue_cents: IntArray
    order_of_page: IntArray  # per page; -1 where no order was placed
    cart_items: IntArray  # per page; items in the cart when checkout started
    cart_value_cents: IntArray


def place_orders(visits: Visits, pages: Pages, shopper: Shopper) -> Orders:
    """What each checkout holds and each purchase buys: the products added to
    cart earlier in the visit since the previous purchase."""

    def key(page: IntArray, position: IntArray) -> IntArray:
        cart: IntArray = (pages.visit[page] * MAX_PAGES_PER_VISIT + pages.cart_round[page]) * (
            MAX_PAGES_PER_VISIT
        ) + position
        return cart

    added = np.flatnonzero(pages.added_to_cart)
    added_keys = key(added, pages.position[added])  # sorted: pages are in visit and position order
    added_products = pages.product[added]
    price_so_far = np.concatenate([[0], np.cumsum(shopper.catalogue.price_cents[added_products])])

    checkouts = np.flatnonzero(pages.kind == CHECKOUT_PAGE)
    first_item = np.searchsorted(added_keys, key(checkouts, np.zeros_like(checkouts)))
    past_item = np.searchsorted(added_keys, key(checkouts, pages.position[checkouts]))
    cart_items = np.zeros(pages.size, dtype=np.int64)
    cart_value = np.zeros(pages.size, dtype=np.int64)
    cart_items[checkouts] = past_item - first_item
    cart_value[checkouts] = price_so_far[past_item] - price_so_far[first_item]

    bought = pages.purchased[checkouts]
    page = checkouts[bought]
    first, past = first_item[bought], past_item[bought]
    counts = past - first
    item_offsets = np.concatenate([[0], np.cumsum(counts)])
    items = added_products[
        np.repeat(first - item_offsets[:-1], counts) + np.arange(item_offsets[-1])
    ]

    user = visits.user[pages.visit[page]]
    new_user = np.ones(page.size, dtype=bool)
    new_user[1:] = user[1:] != user[:-1]
    first_order_of_user = np.maximum.accumulate(np.where(new_user, np.arange(page.size), 0))
    order_of_page = np.full(pages.size, -1)
    order_of_page[page] = np.arange(page.size)
    return Orders(
        page=page,
        number=np.arange(page.size) - first_order_of_user + 1,
        item_offsets=item_offsets,
        items=items,
        revenue_cents=cart_value[page],
        order_of_page=order_of_page,
        cart_items=cart_items,
        cart_value_cents=cart_value,
    )


@dataclass(frozen=True)
class EventFrame:
    """A cohort's events as numbers, sorted by time. ``page`` indexes ``Pages``;
    ``element`` is -1 and ``x``/``y`` NaN except on clicks (and hovers for the element)."""

    kind: IntArray
    page: IntArray
    timestamp_ms: IntArray
    received_ms: IntArray
    element: IntArray
    x: FloatArray
    y: FloatArray
    value: IntArray  # scroll depth, hover duration, result count: what the kind needs
    user: IntArray  # population index
    device: IntArray  # 0 first device, 1 second device
    identified: BoolArray  # carries the user id

    @property
    def size(self) -> int:
        return int(self.kind.size)


@dataclass
class _Blocks:
    """Event rows collected kind by kind; unused fields are filled with "none"."""

    parts: list[tuple[IntArray, ...]] = field(default_factory=list)
    coordinates: list[tuple[FloatArray, FloatArray]] = field(default_factory=list)

    def add(
        self,
        kind: int,
        page: IntArray,
        offset_ms: IntArray,
        element: IntArray | None = None,
        xy: tuple[FloatArray, FloatArray] | None = None,
        value: IntArray | None = None,
    ) -> None:
        count = page.size
        none = np.full(count, -1)
        self.parts.append(
            (
                np.full(count, kind),
                page,
                offset_ms.astype(np.int64),
                none if element is None else element,
                np.zeros(count, np.int64) if value is None else value,
            )
        )
        self.coordinates.append(
            xy if xy is not None else (np.full(count, np.nan), np.full(count, np.nan))
        )

    def columns(
        self,
    ) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray, FloatArray, FloatArray]:
        kind, page, offset, element, value = (
            np.concatenate(column) for column in zip(*self.parts, strict=True)
        )
        x = np.concatenate([xy[0] for xy in self.coordinates])
        y = np.concatenate([xy[1] for xy in self.coordinates])
        return kind, page, offset, element, value, x, y


@dataclass(frozen=True)
class _Screen:
    """Per page: the viewport it was seen in and how tall the page is."""

    width: IntArray
    height: IntArray
    page_height: IntArray
    has_pointer: BoolArray  # desktops hover; touch screens do not


def _place(
    kind: IntArray, element: IntArray, page: IntArray, screen: _Screen, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Page coordinates of clicks on ``element`` of pages ``page``, scattered around the element."""
    width, page_height = screen.width[page], screen.page_height[page]
    x = (
        LAYOUT.x_fraction[kind, element] * width
        + rng.normal(size=page.size) * LAYOUT.x_spread[kind, element] * width
    )
    y = (
        LAYOUT.y_pixels[kind, element]
        + LAYOUT.y_fraction[kind, element] * page_height
        + rng.normal(size=page.size) * LAYOUT.y_spread[kind, element] * page_height
    )
    return np.clip(np.round(x), 0, width - 1), np.clip(np.round(y), 0, page_height - 1)


def emit_events(
    visits: Visits,
    pages: Pages,
    accounts: Accounts,
    orders: Orders,
    population: Population,
    end_ms: int,
    rng: np.random.Generator,
) -> EventFrame:
    """Every event of a cohort that happened before ``end_ms``, in time order."""
    user_of_page = visits.user[pages.visit]
    device_of_page = accounts.visit_device[pages.visit]
    recorder = _Recorder(pages, population, user_of_page, device_of_page, rng)
    recorder.page_views_and_products()
    recorder.actions(orders)
    recorder.navigation()
    recorder.exploration()
    recorder.rage_bursts()
    recorder.hovers()
    recorder.identification(accounts.signup_page, accounts.signup_ms, then_sign_up=True)
    recorder.identification(accounts.login_page, accounts.login_ms, then_sign_up=False)
    kind, page, offset, element, value, x, y = recorder.with_scrolls_and_leaves()

    unsorted_timestamp = pages.start_ms[page] + offset
    kept = unsorted_timestamp < end_ms
    order = np.flatnonzero(kept)[np.argsort(unsorted_timestamp[kept], kind="stable")]
    timestamp = unsorted_timestamp[order]
    page = page[order]
    user = user_of_page[page]
    device_slot = device_of_page[page]
    local_user = user - accounts.first_user
    identified_since = np.where(
        device_slot == 0, accounts.signup_ms[local_user], accounts.login_ms[local_user]
    )
    return EventFrame(
        kind=kind[order],
        page=page,
        timestamp_ms=timestamp,
        received_ms=timestamp + rng.integers(*RECEIVE_DELAY_MS, timestamp.size),
        element=element[order],
        x=x[order],
        y=y[order],
        value=value[order],
        user=user,
        device=device_slot,
        identified=timestamp >= identified_since,
    )


class _Recorder:
    """Records the events of every page of a cohort, one kind of event at a time."""

    def __init__(
        self,
        pages: Pages,
        population: Population,
        user_of_page: IntArray,
        device_of_page: IntArray,
        rng: np.random.Generator,
    ) -> None:
        viewport = population.viewport[user_of_page, device_of_page]
        device = population.device[user_of_page, device_of_page]
        height = VIEWPORT.height[viewport]
        self.pages = pages
        self.persona = population.persona[user_of_page]
        self.screen = _Screen(
            width=VIEWPORT.width[viewport],
            height=height,
            page_height=(height * PAGE_KIND.height_screens[pages.kind]).astype(np.int64),
            has_pointer=DEVICE.device_type[device] == DESKTOP,
        )
        self.rng = rng
        self.blocks = _Blocks()
        self.every_page = np.arange(pages.size)

    def at(self, page: IntArray, fraction: FloatArray | float) -> IntArray:
        """Milliseconds into each page's dwell."""
        moment: IntArray = (self.pages.dwell_ms[page] * fraction).astype(np.int64)
        return moment

    def between(self, page: IntArray, low: float, high: float) -> IntArray:
        """A random moment between two fractions of each page's dwell."""
        return self.at(page, self.rng.uniform(low, high, page.size))

    def click(self, page: IntArray, offset_ms: IntArray, element: IntArray) -> None:
        xy = _place(self.pages.kind[page], element, page, self.screen, self.rng)
        self.blocks.add(CLICK, page, offset_ms, element, xy)

    def page_views_and_products(self) -> None:
        pages = self.pages
        self.blocks.add(PAGE_VIEW, self.every_page, np.zeros(pages.size, dtype=np.int64))
        viewed = np.flatnonzero(pages.kind == PRODUCT_PAGE)
        self.blocks.add(VIEW_PRODUCT, viewed, self.between(viewed, 0.005, 0.02) + 1)
        searched = np.flatnonzero(pages.kind == SEARCH_PAGE)
        results = self.rng.integers(*SEARCH_RESULTS, searched.size)
        self.blocks.add(SEARCH, searched, self.at(searched, 0.002) + 1, value=results)

    def actions(self, orders: Orders) -> None:
        """Add to cart, start checkout, place the order: each with the click that does it."""
        carted = np.flatnonzero(self.pages.added_to_cart)
        cart_click = self.rng.uniform(0.5, 0.8, carted.size)
        self.click(carted, self.at(carted, cart_click), np.full(carted.size, ADD_TO_CART_BUTTON))
        self.blocks.add(ADD_TO_CART, carted, self.at(carted, cart_click + 0.02) + 1)
        checkouts = np.flatnonzero(self.pages.kind == CHECKOUT_PAGE)
        self.blocks.add(CHECKOUT_STARTED, checkouts, self.at(checkouts, 0.01) + 1)
        paid = orders.page
        self.click(paid, self.between(paid, 0.8, 0.86), np.full(paid.size, PLACE_ORDER_BUTTON))
        self.blocks.add(PURCHASE, paid, self.at(paid, 0.9))

    def navigation(self) -> None:
        """The click that leads to the next page, just before the page is left."""
        leaving = np.flatnonzero(self.pages.next_kind != EXIT)
        target = NAVIGATION_ELEMENT[self.pages.next_kind[leaving]]
        self.click(leaving, self.between(leaving, 0.94, 0.99), target)

    def exploration(self) -> None:
        """Clicks that lead nowhere: images, selectors, tabs, filters."""
        clicks = self.rng.poisson(PERSONA.clicks_per_page[self.persona])
        page = np.repeat(self.every_page, clicks)
        self.click(page, self.between(page, 0.1, 0.9), _explore(self.pages.kind[page], self.rng))

    def rage_bursts(self) -> None:
        """Bursts of clicks on one spot, where a page frustrates (mostly checkout)."""
        pages, rng = self.pages, self.rng
        raging = np.flatnonzero(rng.random(pages.size) < PAGE_KIND.rage_rate[pages.kind])
        clicks = rng.integers(*RAGE_CLICKS, raging.size)
        element = _explore(pages.kind[raging], rng)
        x, y = _place(pages.kind[raging], element, raging, self.screen, rng)
        start = self.between(raging, 0.2, 0.5)

        burst = np.repeat(np.arange(raging.size), clicks)
        first_of_burst = np.cumsum(clicks) - clicks
        gap = rng.integers(*RAGE_GAP_MS, burst.size)
        gap[first_of_burst] = 0
        elapsed = np.cumsum(gap)
        elapsed -= elapsed[first_of_burst][burst]
        page = raging[burst]
        jitter = rng.uniform(-RAGE_JITTER_PX, RAGE_JITTER_PX, (2, burst.size)).round()
        xy = (
            np.clip(x[burst] + jitter[0], 0, self.screen.width[page] - 1),
            np.clip(y[burst] + jitter[1], 0, self.screen.page_height[page] - 1),
        )
        self.blocks.add(CLICK, page, start[burst] + elapsed, element[burst], xy)

    def hovers(self) -> None:
        """Pointer rests on elements; only devices with a pointer have them."""
        rate = PERSONA.hovers_per_page[self.persona] * self.screen.has_pointer
        page = np.repeat(self.every_page, self.rng.poisson(rate))
        duration = self.rng.lognormal(np.log(HOVER_MEDIAN_MS), HOVER_SPREAD, page.size)
        self.blocks.add(
            HOVER,
            page,
            self.between(page, 0.05, 0.9),
            _explore(self.pages.kind[page], self.rng),
            value=np.clip(duration, 150, 8000).astype(np.int64),
        )

    def identification(
        self, page_of_user: IntArray, moment_ms: IntArray, then_sign_up: bool
    ) -> None:
        """A click on the account icon, then ``identify`` at ``moment_ms`` (and
        at a sign-up the ``sign_up`` track right after); users with a page only."""
        has = page_of_user >= 0
        page = page_of_user[has]
        offset = moment_ms[has] - self.pages.start_ms[page]
        self.click(page, offset // 2, np.full(page.size, ACCOUNT_ICON))
        self.blocks.add(IDENTIFY, page, offset)
        if then_sign_up:
            self.blocks.add(SIGN_UP, page, offset + SIGNUP_EVENT_DELAY_MS)

    def with_scrolls_and_leaves(
        self,
    ) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray, FloatArray, FloatArray]:
        """All columns, with scroll milestones and page_leave added last: how
        far a page was scrolled depends on what was clicked on it."""
        pages = self.pages
        kind, page, offset, element, value, x, y = self.blocks.columns()
        max_scroll = _max_scroll(self.persona, self.screen, kind, page, y, self.rng)
        scroll_page, depth, scroll_offset = _scroll_milestones(
            pages, self.screen, max_scroll, self.rng
        )
        added = scroll_page.size + pages.size
        return (
            np.concatenate(
                [kind, np.full(scroll_page.size, SCROLL), np.full(pages.size, PAGE_LEAVE)]
            ),
            np.concatenate([page, scroll_page, self.every_page]),
            np.concatenate([offset, scroll_offset, pages.dwell_ms]),
            np.concatenate([element, np.full(added, -1)]),
            np.concatenate([value, depth, max_scroll]),
            np.concatenate([x, np.full(added, np.nan)]),
            np.concatenate([y, np.full(added, np.nan)]),
        )


def _explore(kind: IntArray, rng: np.random.Generator) -> IntArray:
    """Elements that draw attention without leading anywhere, by the layout's explore weights."""
    return pick(LAYOUT.explore_cdf[kind], rng)


def _max_scroll(
    persona: IntArray,
    screen: _Screen,
    kind: IntArray,
    page: IntArray,
    y: FloatArray,
    rng: np.random.Generator,
) -> IntArray:
    """Deepest point seen on each page, in percent of its height: the first
    screen at load, then a persona-dependent share of the rest, and at least
    as far down as anything clicked."""
    first_screen = np.minimum(screen.height / screen.page_height, 1.0)
    mean = PERSONA.scroll_depth[persona]
    depth = rng.beta(mean * SCROLL_CONCENTRATION, (1 - mean) * SCROLL_CONCENTRATION)
    seen = first_screen + (1 - first_screen) * np.minimum(depth * SCROLL_STRETCH, 1.0)
    clicked = (kind == CLICK) & ~np.isnan(y)
    np.maximum.at(seen, page[clicked], (y[clicked] + 1) / screen.page_height[page[clicked]])
    percent: IntArray = np.minimum(np.ceil(seen * 100), 100).astype(np.int64)
    return percent


def _scroll_milestones(
    pages: Pages, screen: _Screen, max_scroll: IntArray, rng: np.random.Generator
) -> tuple[IntArray, IntArray, IntArray]:
    """One scroll event per milestone reached: those in the first screen right
    after load, the rest spread over the dwell in order of depth."""
    reached = SCROLL_MILESTONES[None, :] <= max_scroll[:, None]
    page, milestone = np.nonzero(reached)
    depth = SCROLL_MILESTONES[milestone]
    at_load = np.ceil(100 * np.minimum(screen.height / screen.page_height, 1.0))[page]
    deeper = (depth - at_load) / np.maximum(max_scroll[page] - at_load, 1)
    fraction = np.where(
        depth <= at_load, rng.uniform(0.01, 0.05, page.size), 0.1 + 0.8 * np.clip(deeper, 0, 1)
    )
    offset = (pages.dwell_ms[page] * fraction).astype(np.int64) + 1
    return page, depth, offset
