"""The Footfall Python SDK: send events to a Footfall collector from Python.

>>> from footfall.sdk import Client
>>> with Client("write-key", "http://127.0.0.1:8000", send=False) as client:
...     _ = client.track("Order Completed", {"revenue": 42.0}, user_id="u-1")

Only the standard library is used, so importing this package stays cheap: the
store and server dependencies of ``footfall`` are not loaded. See docs/sdk.md.
"""

from footfall.sdk.client import Client, DeliveryStats, ErrorCallback
from footfall.sdk.errors import ClientClosed, DeliveryError, MessageTooLarge

__all__ = ["Client", "ClientClosed", "DeliveryError", "DeliveryStats", "ErrorCallback", "MessageTooLarge"]
