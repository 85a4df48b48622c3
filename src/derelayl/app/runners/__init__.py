"""Adapters from a resolved config to the core's runners, one module per algorithm family.

Each runner takes an :class:`ExperimentContext` (lazily built data, partition, participants and
model) and returns an :class:`Outcome`; ``derelayl.app.pipeline`` writes the files and tracking that
every algorithm shares.
"""

from derelayl.app.context import (RUNNERS, ExperimentContext, Outcome, register, runner_for,
                                   uses_data)

__all__ = ["ExperimentContext", "Outcome", "register", "runner_for", "uses_data", "RUNNERS"]
