"""Config -> the population of a run: churn, behaviours and economics of every identity.

Shared by DeRelayL and the FL baselines: the same keys (``churn.*``, ``participants.behaviour``,
``participants.economics``) mean the same thing under every algorithm.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from omegaconf import DictConfig, OmegaConf

from derelayl.protocol.behaviours import assign_behaviours
from derelayl.protocol.population import ChurnParams, Economics, EconomicsParams
from derelayl.sim.seeding import numpy_rng


def churn_from_config(cfg: DictConfig) -> ChurnParams:
    return ChurnParams(**cast(dict[str, Any], OmegaConf.to_container(cfg.churn, resolve=True)))


def behaviour_fractions(cfg: DictConfig) -> dict[str, float]:
    return {k: float(v) for k, v in cfg.participants.get("behaviour", {}).items()}


def economics_params(cfg: DictConfig) -> EconomicsParams:
    return EconomicsParams(**cfg.participants.get("economics", {}))


def population(cfg: DictConfig, size: int, honest: tuple[int, ...]) -> tuple[np.ndarray, Economics]:
    """Behaviours and economics of ``size`` identities (from the seed); ``honest`` stay honest."""
    behaviour = assign_behaviours(
        size, behaviour_fractions(cfg), numpy_rng(cfg.seed, "behaviour"), exclude=honest
    )
    economics = Economics.draw(size, economics_params(cfg), numpy_rng(cfg.seed, "economics"))
    return behaviour, economics
