"""The simulated world's parameters, as tables.

Every behavioural knob lives in a row of a table here, one row per persona,
channel, country, device, event kind, so a reader can compare personas side by
side and the generator never branches on a name: it looks parameters up by a
row's code (``PERSONA.cart_rate[persona_codes]``).

Rows are ``NamedTuple``s (typed, readable); ``as_columns`` turns a table into a
numpy record array whose fields are columns, which is what the vectorised
generator indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MS_PER_SECOND = 1000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000


def as_columns(rows: Sequence[NamedTuple]) -> np.recarray[Any, Any]:
    """A table of rows as a record array: ``as_columns(PERSONAS).share`` is a column."""
    arrays = [np.array(column) for column in zip(*rows, strict=True)]
    dtype = [(name, array.dtype) for name, array in zip(rows[0]._fields, arrays, strict=True)]
    columns: np.recarray[Any, Any] = np.rec.fromarrays(arrays, dtype=dtype)
    return columns


# --- Event kinds -------------------------------------------------------------


class EventKind(NamedTuple):
    name: str
    type: str  # the message type: "page", "identify" or "track"
    signal: str  # "passive" (observed) or "active" (the user did something); "" for identify


EVENT_KINDS = (
    EventKind("page_view", "page", "passive"),
    EventKind("view_product", "track", "passive"),
    EventKind("search", "track", "active"),
    EventKind("click", "track", "active"),
    EventKind("scroll", "track", "passive"),
    EventKind("hover", "track", "passive"),
    EventKind("page_leave", "track", "passive"),
    EventKind("add_to_cart", "track", "active"),
    EventKind("checkout_started", "track", "active"),
    EventKind("purchase", "track", "active"),
    EventKind("sign_up", "track", "active"),
    # Traits only: an identify is a statement about the user, not behaviour,
    # and a "signal" key would become a trait on the profile.
    EventKind("identify", "identify", ""),
)
EVENT_NAMES: tuple[str, ...] = tuple(kind.name for kind in EVENT_KINDS)
ACTIVE_EVENT_NAMES: tuple[str, ...] = tuple(k.name for k in EVENT_KINDS if k.signal == "active")

# Codes of the event kinds, for the generator.
PAGE_VIEW, VIEW_PRODUCT, SEARCH, CLICK, SCROLL, HOVER, PAGE_LEAVE = range(7)
ADD_TO_CART, CHECKOUT_STARTED, PURCHASE, SIGN_UP, IDENTIFY = range(7, 12)
IS_ACTIVE_KIND = np.array([kind.signal == "active" for kind in EVENT_KINDS])


# --- Personas ----------------------------------------------------------------


class Persona(NamedTuple):
    """A latent kind of user. Rates are per opportunity unless a unit says otherwise."""

    name: str
    share: float  # of new users
    sessions_per_day: float  # rate of return visits while still active
    continue_rate: float  # chance of going on to another page (pages/session ≈ 1/(1-c))
    scroll_depth: float  # mean fraction of the page below the first screen that gets seen
    dwell_seconds: float  # median time on a page
    clicks_per_page: float  # exploratory clicks (not counting navigation)
    hovers_per_page: float  # on devices with a pointer
    cart_rate: float  # add to cart on a product page at the category's median price
    checkout_rate: float  # go to checkout from a cart with items in it
    purchase_rate: float  # complete a started checkout
    price_sensitivity: float  # elasticity: chance scales with (price / median) ** -this
    sale_affinity: float  # how much more an on-sale product attracts views and carts
    search_affinity: float  # weight on the search box when navigating
    signup_rate: float  # chance of ever creating an account
    premium_share: float  # of sign-ups, on the premium plan
    churn_per_day: float  # hazard of leaving for good
    second_device_rate: float  # of sign-ups, also shopping on another device


# fmt: off
PERSONAS_TABLE = (
    #        name             share sess/d cont  scroll dwell clicks hovers cart  chkout buy   price sale  search signup prem  churn  2nd-dev
    Persona("buyer",          0.20, 0.08,  0.75, 0.35,  30.0, 0.6,   0.5,   0.20, 0.70,  0.80, 0.4,  1.2,  1.2,   0.75,  0.20, 0.012, 0.35),
    Persona("browser",        0.30, 0.06,  0.71, 0.30,  40.0, 0.5,   0.8,   0.03, 0.25,  0.35, 0.6,  1.0,  0.8,   0.12,  0.05, 0.020, 0.20),
    Persona("bargain_hunter", 0.18, 0.09,  0.79, 0.40,  25.0, 0.8,   0.6,   0.10, 0.50,  0.55, 1.6,  4.0,  2.0,   0.40,  0.05, 0.015, 0.25),
    Persona("churner",        0.20, 0.30,  0.63, 0.25,  20.0, 0.4,   0.3,   0.06, 0.35,  0.40, 0.8,  1.5,  1.0,   0.20,  0.02, 0.250, 0.10),
    Persona("loyal",          0.12, 0.24,  0.77, 0.35,  35.0, 0.7,   0.5,   0.15, 0.70,  0.85, 0.3,  1.0,  1.0,   0.95,  0.40, 0.004, 0.55),
)
# fmt: on
PERSONAS: tuple[str, ...] = tuple(persona.name for persona in PERSONAS_TABLE)
PERSONA = as_columns(PERSONAS_TABLE)

PLANS = ("free", "premium")
SIGNUP_METHODS = ("email", "google", "apple")


# --- Acquisition channels ----------------------------------------------------


class Channel(NamedTuple):
    name: str
    share: float  # of new users acquired through it
    return_share: float  # of later visits arriving through it
    utm_source: str  # "" for channels without campaign tags
    utm_medium: str
    utm_campaign: str
    referrer: str  # "" when browsers send none
    land_home: float  # landing page weights: home, category, product
    land_category: float
    land_product: float


# fmt: off
CHANNELS_TABLE = (
    #       name           share return utm_source      utm_medium  utm_campaign     referrer                         home  cat   product
    Channel("organic",     0.30, 0.25,  "",             "",         "",              "https://www.google.com/",       0.40, 0.25, 0.35),
    Channel("paid_search", 0.18, 0.05,  "google",       "cpc",      "brand_search",  "https://www.google.com/",       0.05, 0.35, 0.60),
    Channel("social",      0.15, 0.10,  "instagram",    "social",   "new_season",    "https://l.instagram.com/",      0.10, 0.20, 0.70),
    Channel("email",       0.07, 0.15,  "newsletter",   "email",    "weekly_digest", "",                              0.20, 0.40, 0.40),
    Channel("referral",    0.10, 0.00,  "partner_blog", "referral", "gift_guide",    "https://blog.partner.example/", 0.05, 0.15, 0.80),
    Channel("direct",      0.20, 0.45,  "",             "",         "",              "",                              0.85, 0.10, 0.05),
)
# fmt: on
CHANNELS: tuple[str, ...] = tuple(channel.name for channel in CHANNELS_TABLE)
CHANNEL = as_columns(CHANNELS_TABLE)


# --- Where users are and what they browse with -------------------------------


class Country(NamedTuple):
    code: str
    locale: str
    utc_offset_minutes: int  # the daily cycle follows local time
    share: float


COUNTRIES_TABLE = (
    Country("US", "en-US", -300, 0.36),
    Country("GB", "en-GB", 0, 0.12),
    Country("DE", "de-DE", 60, 0.11),
    Country("FR", "fr-FR", 60, 0.08),
    Country("CA", "en-CA", -300, 0.07),
    Country("NL", "nl-NL", 60, 0.06),
    Country("ES", "es-ES", 60, 0.05),
    Country("BR", "pt-BR", -180, 0.06),
    Country("AU", "en-AU", 600, 0.05),
    Country("IN", "en-IN", 330, 0.04),
)
COUNTRY = as_columns(COUNTRIES_TABLE)

DESKTOP, MOBILE, TABLET = range(3)
DEVICE_TYPES = ("desktop", "mobile", "tablet")


class Device(NamedTuple):
    """A browser build. ``os`` and ``browser`` are what ``describe_client`` reads from the UA."""

    user_agent: str
    device_type: int
    os: str
    browser: str
    share: float


# fmt: off
DEVICES_TABLE = (
    Device("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", DESKTOP, "Windows", "Chrome", 0.17),
    Device("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15", DESKTOP, "Mac OS X", "Safari", 0.07),
    Device("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", DESKTOP, "Windows", "Firefox", 0.03),
    Device("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", DESKTOP, "Windows", "Edge", 0.05),
    Device("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", DESKTOP, "Mac OS X", "Chrome", 0.06),
    Device("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1", MOBILE, "iOS", "Mobile Safari", 0.28),
    Device("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", MOBILE, "Android", "Chrome Mobile", 0.19),
    Device("Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36", MOBILE, "Android", "Samsung Internet", 0.07),
    Device("Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1", TABLET, "iOS", "Mobile Safari", 0.05),
    Device("Mozilla/5.0 (Linux; Android 13; SM-T970) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", TABLET, "Android", "Chrome", 0.03),
)
# fmt: on
DEVICE = as_columns(DEVICES_TABLE)

# A second device is another kind of screen: phone users add a laptop, and so on.
SECOND_DEVICE_TYPE = np.array([MOBILE, DESKTOP, DESKTOP])


class Viewport(NamedTuple):
    device_type: int
    width: int
    height: int


VIEWPORTS_TABLE = (
    Viewport(DESKTOP, 1920, 947),
    Viewport(DESKTOP, 1536, 730),
    Viewport(DESKTOP, 1440, 789),
    Viewport(DESKTOP, 1366, 657),
    Viewport(DESKTOP, 1280, 720),
    Viewport(MOBILE, 390, 664),
    Viewport(MOBILE, 414, 715),
    Viewport(MOBILE, 375, 553),
    Viewport(MOBILE, 360, 640),
    Viewport(MOBILE, 412, 783),
    Viewport(TABLET, 810, 1080),
    Viewport(TABLET, 820, 1180),
    Viewport(TABLET, 768, 1024),
)
VIEWPORT = as_columns(VIEWPORTS_TABLE)


# --- When people shop ---------------------------------------------------------

# Relative activity by local weekday, Monday first: weekends are busier.
WEEKDAY_WEIGHTS = np.array([0.95, 0.92, 0.93, 0.96, 1.02, 1.25, 1.35])
WEEKDAY_WEIGHTS = WEEKDAY_WEIGHTS / WEEKDAY_WEIGHTS.mean()

# Relative activity by local hour: quiet nights, a lunch bump, an evening peak.
# fmt: off
HOUR_WEIGHTS = np.array([
    0.25, 0.15, 0.10, 0.08, 0.08, 0.12, 0.30, 0.55, 0.75, 0.85, 0.90, 0.95,
    1.05, 1.00, 0.95, 0.95, 1.00, 1.10, 1.30, 1.50, 1.60, 1.45, 1.05, 0.60,
])
# fmt: on
HOUR_WEIGHTS = HOUR_WEIGHTS / HOUR_WEIGHTS.mean()

# The peak of weekday by hour, for thinning a homogeneous Poisson process.
PEAK_ACTIVITY = float(WEEKDAY_WEIGHTS.max() * HOUR_WEIGHTS.max())

# 1970-01-01, day 0 of epoch time, was a Thursday (Monday = 0).
_EPOCH_WEEKDAY = 3


def relative_activity(timestamps_ms: IntArray, utc_offsets_minutes: IntArray) -> FloatArray:
    """Weekday-and-hour-of-day weight (mean 1) at each UTC instant, in local time.

    >>> relative_activity(np.array([0]), np.array([0])).round(3)  # Thursday 00:00 UTC
    array([0.293])
    """
    local_ms = timestamps_ms + utc_offsets_minutes * 60_000
    weekday = (local_ms // MS_PER_DAY + _EPOCH_WEEKDAY) % 7
    hour = (local_ms // MS_PER_HOUR) % 24
    weights: FloatArray = WEEKDAY_WEIGHTS[weekday] * HOUR_WEIGHTS[hour]
    return weights
