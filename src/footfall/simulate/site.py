"""The shop: page kinds, how people move between them, page layouts, the catalogue.

A page *kind* (home, category, product, ...) decides the path, the layout
(where elements sit, so clicks form a heatmap), how long people stay and where
they go next. A page *address* is one concrete page (``/product/17``); the
``SiteMap`` lists every address once, so events refer to pages by a small
integer and the url, path and title columns are dictionary look-ups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from footfall.simulate.world import BoolArray, FloatArray, IntArray, as_columns

SHOP_URL = "https://shop.example"
SHOP_NAME = "Shop Example"
CURRENCY = "USD"

HOME_PAGE, CATEGORY_PAGE, PRODUCT_PAGE, SEARCH_PAGE, CART_PAGE, CHECKOUT_PAGE = range(6)
EXIT = -1


class PageKind(NamedTuple):
    name: str
    dwell_factor: float  # times the persona's median dwell
    continue_factor: float  # times the persona's continue rate
    height_screens: float  # page height in viewport heights
    rage_rate: float  # chance of a rage-click burst per page view; checkout frustrates most


PAGE_KINDS_TABLE = (
    PageKind("home", 0.6, 1.00, 4.0, 0.005),
    PageKind("category", 0.8, 1.00, 5.0, 0.008),
    PageKind("product", 1.2, 1.00, 3.0, 0.012),
    PageKind("search", 0.6, 1.05, 4.0, 0.010),
    PageKind("cart", 0.8, 0.95, 1.6, 0.020),
    PageKind("checkout", 2.0, 0.60, 2.2, 0.050),
)
PAGE_KIND = as_columns(PAGE_KINDS_TABLE)

# Where a click leads, when the user moves on and no decision (cart, checkout)
# overrides it. Rows: from kind; columns: to kind. Checkout is only reached
# from a cart with items in it, so its column is zero here.
# fmt: off
NEXT_KIND_WEIGHTS = np.array([
    #  home  category product search cart  checkout
    [0.00, 0.40,    0.35,   0.20,  0.05, 0.0],  # from home
    [0.05, 0.15,    0.70,   0.07,  0.03, 0.0],  # from category
    [0.05, 0.25,    0.55,   0.10,  0.05, 0.0],  # from product
    [0.03, 0.07,    0.80,   0.08,  0.02, 0.0],  # from search
    [0.15, 0.30,    0.45,   0.10,  0.00, 0.0],  # from cart
    [0.30, 0.20,    0.50,   0.00,  0.00, 0.0],  # from checkout
])
# fmt: on


# --- Layout --------------------------------------------------------------------


class Element(NamedTuple):
    """Where an element sits: x as a fraction of the viewport width, y as pixels
    from the top plus a fraction of the page height; spreads are one standard
    deviation of where clicks land (a product grid spreads, a button does not)."""

    page_kind: int  # -1: in the header of every page
    name: str
    x_fraction: float
    x_spread: float
    y_pixels: float
    y_fraction: float
    y_spread: float
    explore_weight: float  # how often it draws a click or hover that does not navigate


# fmt: off
ELEMENTS_TABLE = (
    Element(-1,       "logo",                0.06, 0.01, 32, 0.00, 0.000, 0.3),
    Element(-1,       "search_box",          0.45, 0.08, 32, 0.00, 0.000, 0.6),
    Element(-1,       "account_icon",        0.90, 0.01, 32, 0.00, 0.000, 0.3),
    Element(-1,       "cart_icon",           0.95, 0.01, 32, 0.00, 0.000, 0.4),
    Element(-1,       "nav_category",        0.30, 0.15, 80, 0.00, 0.000, 0.8),
    Element(HOME_PAGE,     "hero_banner",         0.50, 0.25, 0,  0.12, 0.040, 2.0),
    Element(HOME_PAGE,     "product_card",        0.50, 0.30, 0,  0.55, 0.200, 2.0),
    Element(HOME_PAGE,     "footer_link",         0.50, 0.25, 0,  0.98, 0.005, 0.3),
    Element(CATEGORY_PAGE, "filter_panel",        0.12, 0.05, 0,  0.30, 0.150, 1.5),
    Element(CATEGORY_PAGE, "sort_dropdown",       0.85, 0.02, 0,  0.05, 0.005, 1.0),
    Element(CATEGORY_PAGE, "product_card",        0.55, 0.28, 0,  0.50, 0.220, 2.5),
    Element(PRODUCT_PAGE,  "product_image",       0.30, 0.10, 0,  0.20, 0.050, 3.0),
    Element(PRODUCT_PAGE,  "size_selector",       0.72, 0.05, 0,  0.22, 0.010, 2.0),
    Element(PRODUCT_PAGE,  "add_to_cart_button",  0.72, 0.03, 0,  0.28, 0.005, 0.5),
    Element(PRODUCT_PAGE,  "review_tab",          0.50, 0.10, 0,  0.60, 0.020, 1.0),
    Element(PRODUCT_PAGE,  "product_card",        0.50, 0.30, 0,  0.85, 0.040, 1.0),
    Element(SEARCH_PAGE,   "filter_panel",        0.12, 0.05, 0,  0.30, 0.150, 1.0),
    Element(SEARCH_PAGE,   "product_card",        0.55, 0.28, 0,  0.45, 0.220, 2.5),
    Element(CART_PAGE,     "quantity_selector",   0.60, 0.03, 0,  0.30, 0.050, 1.5),
    Element(CART_PAGE,     "remove_item",         0.80, 0.02, 0,  0.30, 0.050, 0.7),
    Element(CART_PAGE,     "checkout_button",     0.80, 0.04, 0,  0.45, 0.010, 0.5),
    Element(CART_PAGE,     "product_card",        0.50, 0.30, 0,  0.80, 0.030, 0.8),
    Element(CHECKOUT_PAGE, "address_form",        0.40, 0.12, 0,  0.35, 0.080, 3.0),
    Element(CHECKOUT_PAGE, "payment_form",        0.40, 0.12, 0,  0.60, 0.060, 2.5),
    Element(CHECKOUT_PAGE, "place_order_button",  0.70, 0.04, 0,  0.85, 0.008, 0.5),
    Element(CHECKOUT_PAGE, "product_card",        0.50, 0.30, 0,  0.95, 0.020, 0.2),
)
# fmt: on
ELEMENT_NAMES: tuple[str, ...] = tuple(dict.fromkeys(element.name for element in ELEMENTS_TABLE))


@dataclass(frozen=True)
class Layout:
    """Element positions as (page kind, element) matrices; NaN where a page lacks the element."""

    x_fraction: FloatArray
    x_spread: FloatArray
    y_pixels: FloatArray
    y_fraction: FloatArray
    y_spread: FloatArray
    explore_cdf: FloatArray  # per page kind, cumulative explore weights over elements

    @classmethod
    def from_table(cls, rows: tuple[Element, ...]) -> Layout:
        shape = (len(PAGE_KINDS_TABLE), len(ELEMENT_NAMES))
        matrices = {name: np.full(shape, np.nan) for name in ("x", "xs", "yp", "yf", "ys")}
        weights = np.zeros(shape)
        for row in rows:
            kinds = range(shape[0]) if row.page_kind < 0 else (row.page_kind,)
            column = ELEMENT_NAMES.index(row.name)
            for kind in kinds:
                matrices["x"][kind, column] = row.x_fraction
                matrices["xs"][kind, column] = row.x_spread
                matrices["yp"][kind, column] = row.y_pixels
                matrices["yf"][kind, column] = row.y_fraction
                matrices["ys"][kind, column] = row.y_spread
                weights[kind, column] = row.explore_weight
        cdf = np.cumsum(weights, axis=1)
        return cls(
            matrices["x"],
            matrices["xs"],
            matrices["yp"],
            matrices["yf"],
            matrices["ys"],
            cdf / cdf[:, -1:],
        )


LAYOUT = Layout.from_table(ELEMENTS_TABLE)

# The element a user clicks to reach a page of each kind.
NAVIGATION_ELEMENT = np.array(
    [
        ELEMENT_NAMES.index(name)
        for name in (
            "logo",
            "nav_category",
            "product_card",
            "search_box",
            "cart_icon",
            "checkout_button",
        )
    ]
)
ADD_TO_CART_BUTTON = ELEMENT_NAMES.index("add_to_cart_button")
PLACE_ORDER_BUTTON = ELEMENT_NAMES.index("place_order_button")
ACCOUNT_ICON = ELEMENT_NAMES.index("account_icon")


# --- Catalogue -----------------------------------------------------------------


class Category(NamedTuple):
    name: str
    slug: str
    median_price: float
    price_spread: float  # sigma of log price
    complements: tuple[str, ...]  # slugs of categories whose products go with these
    nouns: tuple[str, ...]  # product names are "<adjective> <noun>"
    queries: tuple[str, ...]  # what people type into search to find these


# fmt: off
CATEGORIES_TABLE = (
    Category("Shoes", "shoes", 80.0, 0.35, ("apparel", "sports", "bags"),
             ("Sneakers", "Running Shoes", "Boots", "Loafers", "Sandals"),
             ("sneakers", "running shoes", "boots", "sandals")),
    Category("Apparel", "apparel", 45.0, 0.45, ("shoes", "accessories", "bags"),
             ("T-Shirt", "Hoodie", "Jeans", "Jacket", "Dress"),
             ("hoodie", "jeans", "rain jacket", "summer dress")),
    Category("Bags", "bags", 70.0, 0.40, ("apparel", "accessories", "shoes"),
             ("Backpack", "Tote", "Duffel", "Crossbody Bag", "Laptop Sleeve"),
             ("backpack", "tote bag", "travel bag", "laptop bag")),
    Category("Accessories", "accessories", 35.0, 0.50, ("apparel", "bags", "beauty"),
             ("Watch", "Sunglasses", "Belt", "Scarf", "Cap"),
             ("watch", "sunglasses", "leather belt", "scarf")),
    Category("Electronics", "electronics", 150.0, 0.70, ("electronics", "home", "bags"),
             ("Headphones", "Speaker", "Charger", "Smartwatch", "Keyboard"),
             ("headphones", "bluetooth speaker", "usb charger", "smartwatch")),
    Category("Home", "home", 40.0, 0.55, ("home", "beauty", "electronics"),
             ("Mug", "Candle", "Throw Blanket", "Lamp", "Cutting Board"),
             ("mug", "scented candle", "desk lamp", "blanket")),
    Category("Beauty", "beauty", 25.0, 0.40, ("beauty", "accessories", "home"),
             ("Face Cream", "Lip Balm", "Shampoo", "Perfume", "Serum"),
             ("face cream", "perfume", "shampoo", "serum")),
    Category("Sports", "sports", 60.0, 0.50, ("shoes", "apparel", "electronics"),
             ("Yoga Mat", "Water Bottle", "Dumbbells", "Fitness Tracker", "Jump Rope"),
             ("yoga mat", "water bottle", "dumbbells", "fitness tracker")),
)
# fmt: on
ADJECTIVES = (
    "Classic",
    "Urban",
    "Trail",
    "Essential",
    "Premium",
    "Everyday",
    "Lightweight",
    "Vintage",
    "Modern",
    "Cozy",
)
COMPLEMENTS_PER_PRODUCT = 3
ON_SALE_SHARE = 0.15
SALE_DISCOUNTS = np.array([0.2, 0.3, 0.4])


@dataclass(frozen=True)
class Catalogue:
    """Products, ``products_per_category`` to a category, ids ``0 .. n-1`` in category order.

    ``price_cents`` is what the product sells for now (after any sale discount).
    """

    products_per_category: int
    names: tuple[str, ...]
    category: IntArray
    price_cents: IntArray
    on_sale: BoolArray
    complements: IntArray  # (products, COMPLEMENTS_PER_PRODUCT) product ids
    popularity: FloatArray  # relative view weight within the category (Zipf by rank)

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def relative_price(self) -> FloatArray:
        """Price over the category's median price: what price sensitivity reacts to."""
        medians = np.array([category.median_price for category in CATEGORIES_TABLE]) * 100
        ratio: FloatArray = self.price_cents / medians[self.category]
        return ratio


def build_catalogue(rng: np.random.Generator, products: int = 200) -> Catalogue:
    """A catalogue of ``products`` spread evenly over the categories.

    Complements of a product come from its category's complement categories,
    popular products more often, so "bought X, then viewed Y" has structure a
    recommender can learn.
    """
    categories = len(CATEGORIES_TABLE)
    per_category = max(1, products // categories)
    names: list[str] = []
    for category in CATEGORIES_TABLE:
        pairs = [f"{adjective} {noun}" for noun in category.nouns for adjective in ADJECTIVES]
        picks = rng.permutation(len(pairs))
        for i in range(per_category):
            # Beyond the distinct pairs a model number keeps names unique.
            suffix = f" {i // len(pairs) + 1}" if i >= len(pairs) else ""
            names.append(pairs[picks[i % len(pairs)]] + suffix)
    category_of = np.repeat(np.arange(categories), per_category)
    medians = np.array([category.median_price for category in CATEGORIES_TABLE])
    spreads = np.array([category.price_spread for category in CATEGORIES_TABLE])
    list_price = medians[category_of] * np.exp(rng.normal(0.0, spreads[category_of]))
    # Shop prices end in .99.
    list_cents = np.maximum(np.round(list_price).astype(np.int64), 1) * 100 - 1
    on_sale = rng.random(category_of.size) < ON_SALE_SHARE
    discount = np.where(on_sale, rng.choice(SALE_DISCOUNTS, category_of.size), 0.0)
    price_cents = np.round(list_cents * (1 - discount)).astype(np.int64)

    rank = rng.permuted(np.tile(np.arange(per_category), (categories, 1)), axis=1).ravel()
    popularity = (1.0 / (1.0 + rank)).astype(np.float64)

    slugs = [category.slug for category in CATEGORIES_TABLE]
    complements = np.empty((category_of.size, COMPLEMENTS_PER_PRODUCT), dtype=np.int64)
    for code, category in enumerate(CATEGORIES_TABLE):
        pool = np.concatenate(
            [
                np.arange(per_category) + slugs.index(slug) * per_category
                for slug in category.complements
            ]
        )
        weights = popularity[pool] / popularity[pool].sum()
        members = np.flatnonzero(category_of == code)
        for product in members:
            candidates = pool[pool != product]
            candidate_weights = weights[pool != product]
            complements[product] = rng.choice(
                candidates,
                COMPLEMENTS_PER_PRODUCT,
                replace=False,
                p=candidate_weights / candidate_weights.sum(),
            )
    return Catalogue(
        per_category, tuple(names), category_of, price_cents, on_sale, complements, popularity
    )


# --- Addresses -------------------------------------------------------------------


@dataclass(frozen=True)
class SiteMap:
    """Every page address once: home, categories, products, one search page per
    query, cart, checkout. Offsets turn a (kind, subject) pair into an address."""

    urls: tuple[str, ...]
    paths: tuple[str, ...]
    titles: tuple[str, ...]
    first_of_kind: IntArray  # address of the first page of each kind

    @classmethod
    def for_catalogue(cls, catalogue: Catalogue) -> SiteMap:
        pages: list[tuple[str, str]] = [("/", SHOP_NAME)]
        pages += [(f"/category/{c.slug}", f"{c.name} | {SHOP_NAME}") for c in CATEGORIES_TABLE]
        pages += [
            (f"/product/{p}", f"{name} | {SHOP_NAME}") for p, name in enumerate(catalogue.names)
        ]
        searches = [query for category in CATEGORIES_TABLE for query in category.queries]
        pages += [
            (f"/search?q={q.replace(' ', '+')}", f"Search: {q} | {SHOP_NAME}") for q in searches
        ]
        pages += [("/cart", f"Your cart | {SHOP_NAME}"), ("/checkout", f"Checkout | {SHOP_NAME}")]
        counts = [1, len(CATEGORIES_TABLE), catalogue.size, len(searches), 1, 1]
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return cls(
            urls=tuple(SHOP_URL + path for path, _ in pages),
            paths=tuple(path.split("?")[0] for path, _ in pages),
            titles=tuple(title for _, title in pages),
            first_of_kind=first,
        )

    def address(self, kind: IntArray, subject: IntArray) -> IntArray:
        """Address of each page: ``subject`` is the category, product or query code
        for those kinds and ignored (pass anything ≥ 0) for the others."""
        offsets = np.where(np.isin(kind, (CATEGORY_PAGE, PRODUCT_PAGE, SEARCH_PAGE)), subject, 0)
        address: IntArray = self.first_of_kind[kind] + offsets
        return address


QUERIES_PER_CATEGORY = len(CATEGORIES_TABLE[0].queries)
