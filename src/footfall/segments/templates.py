"""Ready-made segments, each a function of its parameters (the defaults suit
the demo shop's events: ``view_product``, ``add_to_cart``, ``purchase``).

>>> [definition.id for definition in ready_made()]
['active_recent', 'lapsed', 'engaged_high_frequency', 'cart_abandoners', 'high_intent_browsers']
>>> cart_abandoners().condition.to_json()
{'sequence': {'steps': [{'event': 'add_to_cart'}], 'then_not': {'event': 'purchase', 'within': '1d'}, 'in_last': '7d'}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from footfall.segments.language import SegmentDefinition, parse_condition


def active_recent(within: str = "7d", *, segment_id: str = "active_recent") -> SegmentDefinition:
    """Seen (any event) in the last ``within``."""
    return SegmentDefinition(
        segment_id,
        parse_condition({"last_seen": {"within": within}}),
        "Active recent",
        f"People with any event in the last {within}.",
    )


def lapsed(inactive_for: str = "14d", *, segment_id: str = "lapsed") -> SegmentDefinition:
    """Seen before, but not in the last ``inactive_for``."""
    return SegmentDefinition(
        segment_id,
        parse_condition({"last_seen": {"more_than": inactive_for}}),
        "Lapsed",
        f"People whose latest event is more than {inactive_for} ago.",
    )


def engaged_high_frequency(sessions: int = 3, in_last: str = "7d", *, segment_id: str = "engaged_high_frequency") -> SegmentDefinition:
    """At least ``sessions`` sessions in the last ``in_last``."""
    return SegmentDefinition(
        segment_id,
        parse_condition({"sessions": {"count": {"gte": sessions}, "in_last": in_last}}),
        "Engaged high frequency",
        f"People with {sessions} or more sessions in the last {in_last}.",
    )


def cart_abandoners(
    wait: str = "24h",
    in_last: str = "7d",
    *,
    cart_event: str = "add_to_cart",
    purchase_event: str = "purchase",
    segment_id: str = "cart_abandoners",
) -> SegmentDefinition:
    """Added to cart in the last ``in_last`` and did not buy within ``wait`` after
    (they enter once ``wait`` has passed)."""
    return SegmentDefinition(
        segment_id,
        parse_condition(
            {
                "sequence": {
                    "steps": [{"event": cart_event}],
                    "then_not": {"event": purchase_event, "within": wait},
                    "in_last": in_last,
                }
            }
        ),
        "Cart abandoners",
        f"People who added to cart in the last {in_last} and did not buy within {wait}.",
    )


def high_intent_browsers(
    views: int = 3,
    in_last: str = "7d",
    *,
    view_event: str = "view_product",
    purchase_event: str = "purchase",
    segment_id: str = "high_intent_browsers",
) -> SegmentDefinition:
    """Viewed products ``views`` or more times in the last ``in_last`` without buying in it."""
    return SegmentDefinition(
        segment_id,
        parse_condition(
            {
                "and": [
                    {"performed": {"event": view_event, "count": {"gte": views}, "in_last": in_last}},
                    {"not": {"performed": {"event": purchase_event, "in_last": in_last}}},
                ]
            }
        ),
        "High-intent browsers",
        f"People who viewed products {views}+ times in the last {in_last} and did not buy.",
    )


TEMPLATES: Mapping[str, Callable[..., SegmentDefinition]] = {
    "active_recent": active_recent,
    "lapsed": lapsed,
    "engaged_high_frequency": engaged_high_frequency,
    "cart_abandoners": cart_abandoners,
    "high_intent_browsers": high_intent_browsers,
}


def ready_made(**parameters: Mapping[str, Any]) -> list[SegmentDefinition]:
    """Every template with its defaults (or ``name={...}`` parameters)."""
    return [template(**parameters.get(name, {})) for name, template in TEMPLATES.items()]
