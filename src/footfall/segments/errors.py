"""Errors of segment definitions: each names the JSON path of the part at fault."""

from __future__ import annotations

from footfall.analytics.errors import SpecError


class ConditionError(SpecError):
    """A condition or segment definition is invalid.

    ``field`` is the JSON path of the part at fault (``$.and[1].performed.in_last``;
    a condition built in Python reports the field name, ``in_last``) and
    ``problem`` says what is wrong and how to fix it.
    """

    code = "bad_segment"

    def under(self, prefix: str) -> ConditionError:
        """The same error, seen from an enclosing part at ``prefix``."""
        field = self.field
        if field.startswith("$"):
            field = field[1:]
        joined = f"{prefix}{field}" if field.startswith("[") else f"{prefix}.{field}" if field else prefix
        return ConditionError(joined, self.problem)
