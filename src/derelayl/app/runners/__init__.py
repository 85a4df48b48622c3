"""Adapters from a resolved config to the core's runners, one module per algorithm family.

Each algorithm's config names its runner (``algorithm.runner._target_``, a
:class:`~derelayl.app.context.Runner`): it takes an :class:`ExperimentContext` (lazily built data,
partition, participants and model) and returns an :class:`Outcome`; ``derelayl.app.pipeline``
writes the files and tracking that every algorithm shares.
"""

from derelayl.app.context import ExperimentContext, Outcome, Runner, runner_of

__all__ = ["ExperimentContext", "Outcome", "Runner", "runner_of"]
