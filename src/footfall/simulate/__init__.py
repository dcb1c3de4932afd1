"""A seeded synthetic e-commerce shop with ground truth, for demos, tests and benchmarks.

Users arrive over the period through acquisition channels, belong to latent
personas (``PERSONAS``), browse a catalogue, scroll, click, hover, add to cart,
buy, sign up, come back on other devices and churn. Events come out as Arrow
tables in ``footfall.events.record.EVENT_SCHEMA``; ``GroundTruth`` records what
the simulator knows (personas, churn, next actions) for checking analyses and
models.

>>> from footfall.simulate import Simulation, SimulationSpec
>>> simulation = Simulation(SimulationSpec(users=50, days=14, seed=3))
>>> events = sum(batch.num_rows for batch in simulation.batches())
>>> simulation.ground_truth().users.num_rows
50

Modules: ``world`` (parameter tables), ``site`` (pages, layout, catalogue),
``population`` (users and visit times), ``browsing`` (pages within a visit),
``accounts`` (sign-ups, devices), ``emit`` (events per page), ``tables``
(Arrow conversion), ``truth`` (ground truth), ``generate`` and ``simulation``
(orchestration and API).
"""

from footfall.simulate.simulation import Simulation, SimulationSpec, simulate
from footfall.simulate.truth import GroundTruth
from footfall.simulate.world import EVENT_NAMES, PERSONAS

__all__ = ["EVENT_NAMES", "PERSONAS", "GroundTruth", "Simulation", "SimulationSpec", "simulate"]
