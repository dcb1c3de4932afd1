"""HTTP API: the query and admin endpoints served by ``footfall serve``."""
