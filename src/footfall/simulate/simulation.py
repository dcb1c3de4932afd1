"""The public face of the simulator: ``SimulationSpec`` in, event batches and ground truth out.

>>> simulation = Simulation(SimulationSpec(users=20, days=7, seed=1))
>>> total = sum(batch.num_rows for batch in simulation.batches(max_rows=1_000))
>>> simulation.ground_truth().users.num_rows
20
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from footfall.simulate.generate import Period, World
from footfall.simulate.tables import catalogue_table, events_table
from footfall.simulate.truth import GroundTruth, truth_of_cohort


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate: ``users`` arriving over ``days`` from ``start``.

    Events grow linearly with users: about 57 per user over 30 days, so about
    18,000 users give one million events and 180,000 users ten million. They
    grow less than linearly with days, because every user's first visit counts
    whatever the length and users churn: about 34 events per user over 7 days,
    82 over 60 and 104 over 90.
    """

    users: int = 2000
    days: int = 30
    seed: int = 7
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    project_id: str = "default"

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"users must be at least 1, got {self.users}")
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if self.start.tzinfo is None:
            raise ValueError(f"start must be timezone-aware (e.g. tzinfo=UTC), got {self.start!r}")
        if not self.project_id:
            raise ValueError("project_id must not be empty")

    @property
    def period(self) -> Period:
        return Period.of(int(self.start.timestamp() * 1000), self.days)


class Simulation:
    """A seeded synthetic shop. The same spec always gives the same events.

    ``ground_truth()`` is ready once ``batches()`` has been consumed to the
    end; asked for earlier, it runs the simulation itself without building the
    event tables (the numbers are the same, only the strings are skipped).
    """

    def __init__(self, spec: SimulationSpec) -> None:
        self.spec = spec
        self._world = World.draw(spec.seed, spec.users, spec.period, spec.project_id)
        self._truth: GroundTruth | None = None

    def batches(self, max_rows: int = 250_000) -> Iterator[pa.Table]:
        """All events, in tables of ``max_rows`` rows (the last may be shorter).

        Each user's events come in time order across batches, so a pipeline
        reading them in order sees every session whole.
        """
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        truth_parts = []
        pending: list[pa.Table] = []
        pending_rows = 0
        emitted = 0
        for cohort in self._world.cohorts():
            truth_parts.append(truth_of_cohort(self._world, cohort))
            position = 0
            while position < cohort.events.size:
                stop = min(cohort.events.size, position + max_rows - pending_rows)
                pending.append(events_table(cohort.view, position, stop, emitted))
                emitted += stop - position
                pending_rows += stop - position
                position = stop
                if pending_rows == max_rows:
                    yield _combine(pending)
                    pending, pending_rows = [], 0
        if pending:
            yield _combine(pending)
        self._truth = GroundTruth.concat(truth_parts)

    def catalogue(self) -> pa.Table:
        """The shop's products: product_id, name, category, price, on_sale and
        complements (the products that go with it)."""
        return catalogue_table(self._world.shopper.catalogue)

    def ground_truth(self) -> GroundTruth:
        if self._truth is None:
            self._truth = GroundTruth.concat(
                [truth_of_cohort(self._world, cohort) for cohort in self._world.cohorts()]
            )
        return self._truth


def _combine(tables: list[pa.Table]) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()


def simulate(spec: SimulationSpec, max_rows: int = 250_000) -> Iterator[pa.Table]:
    """The events of ``Simulation(spec)``, in batches of at most ``max_rows``."""
    return Simulation(spec).batches(max_rows)
