"""Errors of the analyses: a bad spec names the field at fault."""

from __future__ import annotations

from footfall.errors import FootfallError


class SpecError(FootfallError, ValueError):
    """A spec (or one of its parts) is invalid.

    ``field`` is the path of the field at fault (``steps[1].event``,
    ``conversion_window``, ``Filter.op``), ``problem`` says what is wrong and,
    where it can, how to fix it. It is also a ValueError, so decoders that
    build specs from JSON report it with the JSON path.
    """

    code = "bad_spec"

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class UnsupportedFeature(FootfallError):
    """A spec asks for something a SQL dialect cannot do here; names the feature."""

    code = "unsupported_feature"

    def __init__(self, dialect: str, feature: str) -> None:
        self.dialect = dialect
        self.feature = feature
        super().__init__(f"{feature} is not supported on {dialect}")
