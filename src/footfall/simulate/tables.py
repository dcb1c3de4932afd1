"""Numbers to strings: a slice of a cohort's ``EventFrame`` as an Arrow table in ``EVENT_SCHEMA``.

Almost every string column has a small domain (pages, devices, countries,
elements), so it is a ``take`` from a dictionary built once. ``properties``
is assembled per event kind from JSON fragments with Arrow's vectorised string
joins (``PROPERTY_BUILDERS``), then put back in event order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from footfall.events.record import TIMESTAMP, conform
from footfall.simulate.browsing import Pages
from footfall.simulate.emit import EventFrame, Orders
from footfall.simulate.population import Population, Visits
from footfall.simulate.site import (
    CATEGORIES_TABLE,
    CURRENCY,
    ELEMENT_NAMES,
    PAGE_KINDS_TABLE,
    Catalogue,
    SiteMap,
)
from footfall.simulate.world import (
    ADD_TO_CART,
    CHANNELS_TABLE,
    CHECKOUT_STARTED,
    CLICK,
    COUNTRIES_TABLE,
    DEVICE_TYPES,
    DEVICES_TABLE,
    EVENT_KINDS,
    HOVER,
    IDENTIFY,
    PAGE_LEAVE,
    PAGE_VIEW,
    PERSONAS,
    PLANS,
    PURCHASE,
    SCROLL,
    SEARCH,
    SIGN_UP,
    SIGNUP_METHODS,
    VIEW_PRODUCT,
    VIEWPORT,
    BoolArray,
    IntArray,
)

LIBRARY = "footfall-simulate"


def _strings(values: list[str] | tuple[str, ...]) -> pa.Array:
    return pa.array(values, pa.string())


def _nullable(values: list[str] | tuple[str, ...]) -> pa.Array:
    """Strings where "" means absent."""
    return pa.array([value or None for value in values], pa.string())


@dataclass(frozen=True)
class Dictionaries:
    """The strings events are made of, indexed by the generator's codes."""

    seed: int
    project_id: str
    event_names: pa.Array
    event_types: pa.Array
    urls: pa.Array
    paths: pa.Array
    titles: pa.Array
    referrers: pa.Array  # every url, then each channel's external referrer (null if none)
    user_agents: pa.Array
    device_types: pa.Array
    oses: pa.Array
    browsers: pa.Array
    countries: pa.Array
    locales: pa.Array
    utm_sources: pa.Array
    utm_mediums: pa.Array
    utm_campaigns: pa.Array
    user_ids: pa.Array  # by population index
    page_view_properties: pa.Array  # by page kind
    click_properties: pa.Array  # by element
    hover_prefixes: pa.Array  # by element
    product_fragments: pa.Array  # by product: '"product_id":"17","category":...,"price":...'
    query_fragments: pa.Array  # by query: '"query":"running shoes"'
    signup_properties: pa.Array  # by method
    plan_fragments: pa.Array  # by plan
    channel_fragments: pa.Array  # by channel
    persona_names: pa.Array
    channel_names: pa.Array

    @classmethod
    def build(
        cls, seed: int, project_id: str, users: int, catalogue: Catalogue, sitemap: SiteMap
    ) -> Dictionaries:
        slugs = [category.slug for category in CATEGORIES_TABLE]
        prices = [_money(int(cents)) for cents in catalogue.price_cents]
        product_fragments = [
            f'"product_id":"{product}","category":"{slugs[category]}","price":{price},'
            f'"on_sale":{"true" if on_sale else "false"}'
            for product, (category, price, on_sale) in enumerate(
                zip(catalogue.category, prices, catalogue.on_sale, strict=True)
            )
        ]
        queries = [query for category in CATEGORIES_TABLE for query in category.queries]
        user_ids = pc.binary_join_element_wise(
            f"u-{seed}-", pc.utf8_lpad(pc.cast(pa.array(np.arange(users)), pa.string()), 6, "0"), ""
        )
        return cls(
            seed=seed,
            project_id=project_id,
            event_names=_strings([kind.name for kind in EVENT_KINDS]),
            event_types=_strings([kind.type for kind in EVENT_KINDS]),
            urls=_strings(sitemap.urls),
            paths=_strings(sitemap.paths),
            titles=_strings(sitemap.titles),
            referrers=_nullable(
                sitemap.urls + tuple(channel.referrer for channel in CHANNELS_TABLE)
            ),
            user_agents=_strings([device.user_agent for device in DEVICES_TABLE]),
            device_types=_strings([DEVICE_TYPES[device.device_type] for device in DEVICES_TABLE]),
            oses=_strings([device.os for device in DEVICES_TABLE]),
            browsers=_strings([device.browser for device in DEVICES_TABLE]),
            countries=_strings([country.code for country in COUNTRIES_TABLE]),
            locales=_strings([country.locale for country in COUNTRIES_TABLE]),
            utm_sources=_nullable([channel.utm_source for channel in CHANNELS_TABLE]),
            utm_mediums=_nullable([channel.utm_medium for channel in CHANNELS_TABLE]),
            utm_campaigns=_nullable([channel.utm_campaign for channel in CHANNELS_TABLE]),
            user_ids=user_ids,
            page_view_properties=_strings(
                [f'{{"signal":"passive","page_type":"{kind.name}"}}' for kind in PAGE_KINDS_TABLE]
            ),
            click_properties=_strings(
                [f'{{"signal":"active","element":"{name}"}}' for name in ELEMENT_NAMES]
            ),
            hover_prefixes=_strings(
                [
                    f'{{"signal":"passive","element":"{name}","duration_ms":'
                    for name in ELEMENT_NAMES
                ]
            ),
            product_fragments=_strings(product_fragments),
            query_fragments=_strings([f'"query":{json.dumps(query)}' for query in queries]),
            signup_properties=_strings(
                [f'{{"signal":"active","method":"{method}"}}' for method in SIGNUP_METHODS]
            ),
            plan_fragments=_strings([f',"plan":"{plan}"' for plan in PLANS]),
            channel_fragments=_strings(
                [f',"signup_channel":"{channel.name}"}}' for channel in CHANNELS_TABLE]
            ),
            persona_names=_strings(PERSONAS),
            channel_names=_strings([channel.name for channel in CHANNELS_TABLE]),
        )


def _money(cents: int) -> str:
    """Cents as a decimal amount.

    >>> _money(5999)
    '59.99'
    """
    return f"{cents // 100}.{cents % 100:02d}"


def money_strings(cents: IntArray) -> pa.Array:
    """Amounts in cents as JSON numbers with two decimals (so they read back as floats)."""
    whole = pc.cast(pa.array(cents // 100), pa.string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(cents % 100), pa.string()), 2, "0")
    return pc.binary_join_element_wise(whole, ".", fraction, "")


def _numbers(values: IntArray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


@dataclass(frozen=True)
class CohortView:
    """Everything a slice of events needs to become a table."""

    dictionaries: Dictionaries
    population: Population
    visits: Visits
    pages: Pages
    address: IntArray  # per page, into the site map
    referrer: IntArray  # per page, into ``Dictionaries.referrers``
    orders: Orders
    events: EventFrame


@dataclass(frozen=True)
class _Rows:
    """The events of one kind within the slice being converted."""

    view: CohortView
    index: IntArray  # into the cohort's EventFrame

    @property
    def page(self) -> IntArray:
        page: IntArray = self.view.events.page[self.index]
        return page

    @property
    def value(self) -> IntArray:
        value: IntArray = self.view.events.value[self.index]
        return value

    def product_fragment(self) -> pa.Array:
        return self.view.dictionaries.product_fragments.take(
            pa.array(self.view.pages.product[self.page])
        )


def _page_view(rows: _Rows) -> pa.Array:
    return rows.view.dictionaries.page_view_properties.take(
        pa.array(rows.view.pages.kind[rows.page])
    )


def _view_product(rows: _Rows) -> pa.Array:
    return _join('{"signal":"passive",', rows.product_fragment(), "}")


def _search(rows: _Rows) -> pa.Array:
    query = rows.view.dictionaries.query_fragments.take(pa.array(rows.view.pages.query[rows.page]))
    return _join('{"signal":"active",', query, ',"results":', _numbers(rows.value), "}")


def _click(rows: _Rows) -> pa.Array:
    return rows.view.dictionaries.click_properties.take(
        pa.array(rows.view.events.element[rows.index])
    )


def _scroll(rows: _Rows) -> pa.Array:
    return _join('{"signal":"passive","depth":', _numbers(rows.value), "}")


def _hover(rows: _Rows) -> pa.Array:
    prefix = rows.view.dictionaries.hover_prefixes.take(
        pa.array(rows.view.events.element[rows.index])
    )
    return _join(prefix, _numbers(rows.value), "}")


def _page_leave(rows: _Rows) -> pa.Array:
    dwell = _numbers(rows.view.pages.dwell_ms[rows.page])
    return _join(
        '{"signal":"passive","dwell_ms":', dwell, ',"max_scroll":', _numbers(rows.value), "}"
    )


def _add_to_cart(rows: _Rows) -> pa.Array:
    return _join('{"signal":"active",', rows.product_fragment(), ',"quantity":1}')


def _checkout_started(rows: _Rows) -> pa.Array:
    orders = rows.view.orders
    return _join(
        '{"signal":"active","cart_size":',
        _numbers(orders.cart_items[rows.page]),
        ',"value":',
        money_strings(orders.cart_value_cents[rows.page]),
        f',"currency":"{CURRENCY}"}}',
    )


def _purchase(rows: _Rows) -> pa.Array:
    orders = rows.view.orders
    order = orders.order_of_page[rows.page]
    user = rows.view.events.user[rows.index]
    order_id = _join(
        f"order-{rows.view.dictionaries.seed}-", _numbers(user), "-", _numbers(orders.number[order])
    )
    items = _join('"', _numbers(orders.items), '"')
    lists = pa.ListArray.from_arrays(pa.array(orders.item_offsets, pa.int32()), items).take(
        pa.array(order)
    )
    return _join(
        '{"signal":"active","order_id":"',
        order_id,
        '","revenue":',
        money_strings(orders.revenue_cents[order]),
        f',"currency":"{CURRENCY}","product_ids":[',
        pc.binary_join(lists, ","),
        "]}",
    )


def _sign_up(rows: _Rows) -> pa.Array:
    method = rows.view.population.signup_method[rows.view.events.user[rows.index]]
    return rows.view.dictionaries.signup_properties.take(pa.array(method))


def _identify(rows: _Rows) -> pa.Array:
    """Traits: email, plan and the channel the user came through."""
    user = rows.view.events.user[rows.index]
    dictionaries, population = rows.view.dictionaries, rows.view.population
    return _join(
        '{"email":"',
        dictionaries.user_ids.take(pa.array(user)),
        '@example.com"',
        dictionaries.plan_fragments.take(pa.array(population.plan[user])),
        dictionaries.channel_fragments.take(pa.array(population.channel[user])),
    )


PROPERTY_BUILDERS: dict[int, Callable[[_Rows], pa.Array]] = {
    PAGE_VIEW: _page_view,
    VIEW_PRODUCT: _view_product,
    SEARCH: _search,
    CLICK: _click,
    SCROLL: _scroll,
    HOVER: _hover,
    PAGE_LEAVE: _page_leave,
    ADD_TO_CART: _add_to_cart,
    CHECKOUT_STARTED: _checkout_started,
    PURCHASE: _purchase,
    SIGN_UP: _sign_up,
    IDENTIFY: _identify,
}


def _properties(view: CohortView, index: IntArray) -> pa.Array:
    kinds = view.events.kind[index]
    pieces, positions = [], []
    for kind, build in PROPERTY_BUILDERS.items():
        position = np.flatnonzero(kinds == kind)
        if position.size:
            pieces.append(build(_Rows(view, index[position])))
            positions.append(position)
    if not pieces:
        return pa.array([], pa.string())
    back = np.empty(index.size, dtype=np.int64)
    back[np.concatenate(positions)] = np.arange(index.size)
    return pa.concat_arrays(pieces).take(pa.array(back))


def catalogue_table(catalogue: Catalogue) -> pa.Table:
    """The products as a table, ids as strings the way events carry them."""
    ids = _numbers(np.arange(catalogue.size))
    slugs = _strings([category.slug for category in CATEGORIES_TABLE])
    complements = pa.ListArray.from_arrays(
        pa.array(
            np.arange(0, catalogue.complements.size + 1, catalogue.complements.shape[1]), pa.int32()
        ),
        _numbers(catalogue.complements.ravel()),
    )
    return pa.table(
        {
            "product_id": ids,
            "name": _strings(catalogue.names),
            "category": slugs.take(pa.array(catalogue.category)),
            "price": pa.array(catalogue.price_cents / 100),
            "on_sale": pa.array(catalogue.on_sale),
            "complements": complements,
        }
    )


def _masked(values: np.ndarray, absent: BoolArray) -> pa.Array:
    return pa.array(values, mask=absent)


def events_table(view: CohortView, start: int, stop: int, first_number: int) -> pa.Table:
    """Events ``start:stop`` of a cohort as a table in ``EVENT_SCHEMA``; event
    ids count on from ``first_number``."""
    d = view.dictionaries
    events, pages, population = view.events, view.pages, view.population
    index = np.arange(start, stop)
    count = index.size
    kind = events.kind[index]
    page = events.page[index]
    user = events.user[index]
    device_slot = events.device[index]
    device = population.device[user, device_slot]
    is_click = kind == CLICK
    first_page_of_campaign_visit = (kind == PAGE_VIEW) & pages.is_first[page]
    channel = view.visits.channel[pages.visit[page]]
    viewport = population.viewport[user, device_slot]
    numbers = _numbers(np.arange(first_number, first_number + count))

    columns = {
        "event_id": _join(f"sim-{d.seed}-", numbers),
        "project_id": pa.repeat(d.project_id, count),
        "type": d.event_types.take(pa.array(kind)),
        "event": d.event_names.take(pa.array(kind)),
        "anonymous_id": population.anonymous_ids.take(pa.array(2 * user + device_slot)),
        "user_id": d.user_ids.take(_masked(user, ~events.identified[index])),
        "timestamp": pa.array(events.timestamp_ms[index], TIMESTAMP),
        "received_at": pa.array(events.received_ms[index], TIMESTAMP),
        "properties": _properties(view, index),
        "url": d.urls.take(pa.array(view.address[page])),
        "path": d.paths.take(pa.array(view.address[page])),
        "referrer": d.referrers.take(pa.array(view.referrer[page])),
        "title": d.titles.take(pa.array(view.address[page])),
        "user_agent": d.user_agents.take(pa.array(device)),
        "locale": d.locales.take(pa.array(population.country[user])),
        "library": pa.repeat(LIBRARY, count),
        "device_type": d.device_types.take(pa.array(device)),
        "os": d.oses.take(pa.array(device)),
        "browser": d.browsers.take(pa.array(device)),
        "country": d.countries.take(pa.array(population.country[user])),
        "utm_source": d.utm_sources.take(_masked(channel, ~first_page_of_campaign_visit)),
        "utm_medium": d.utm_mediums.take(_masked(channel, ~first_page_of_campaign_visit)),
        "utm_campaign": d.utm_campaigns.take(_masked(channel, ~first_page_of_campaign_visit)),
        "x": _masked(events.x[index], ~is_click),
        "y": _masked(events.y[index], ~is_click),
        "viewport_width": _masked(VIEWPORT.width[viewport].astype(np.int32), ~is_click),
        "viewport_height": _masked(VIEWPORT.height[viewport].astype(np.int32), ~is_click),
    }
    return conform(pa.table(columns))
