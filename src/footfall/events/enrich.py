"""Context enrichment: device, OS and browser from the user agent."""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from ua_parser import parse as parse_user_agent


class Client(NamedTuple):
    device_type: str
    os: str | None
    browser: str | None


_TABLETS = ("iPad", "Tablet", "Kindle", "Nexus 7", "Nexus 9", "SM-T")


@lru_cache(maxsize=4096)
def describe_client(user_agent: str) -> Client:
    """Device type (desktop, mobile, tablet, bot), OS and browser family.

    >>> describe_client("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
    ...                 "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
    Client(device_type='mobile', os='iOS', browser='Mobile Safari')
    """
    parsed = parse_user_agent(user_agent)
    device = parsed.device.family if parsed.device else ""
    if device == "Spider":
        device_type = "bot"
    elif any(marker in user_agent or marker in device for marker in _TABLETS):
        device_type = "tablet"
    elif "Mobi" in user_agent or device in ("iPhone", "iPod"):
        device_type = "mobile"
    else:
        device_type = "desktop"
    os_name = parsed.os.family if parsed.os and parsed.os.family != "Other" else None
    browser = parsed.user_agent.family if parsed.user_agent and parsed.user_agent.family != "Other" else None
    return Client(device_type, os_name, browser)
