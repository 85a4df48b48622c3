"""Registers derelayl's Ray launcher with Hydra (plugins must live in ``hydra_plugins``).

The work is done in :mod:`derelayl.launchers.ray`; ``ray`` is imported only when a sweep is
launched, so Hydra's plugin scan works where the ``ray`` extra is not installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class RayLauncher(Launcher):
    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from derelayl.launchers.ray import launch

        return launch(self, job_overrides, initial_job_idx)
