"""Shapley values of a finished run's participants (the fairness reference), for every algorithm.

Each algorithm supplies its value function (``derelayl.core.coalitions``); this module runs the
estimator with the ``shapley.*`` settings and writes ``shapley.json``.
"""

from __future__ import annotations

import logging
from typing import Any

from derelayl.core.errors import ConfigError
from derelayl.core.seeding import numpy_rng
from derelayl.core.shapley import ShapleyResult, check_parameters, shapley_values, spearman
from derelayl.runners.base import ExperimentContext
from derelayl.tracking.files import write_json

log = logging.getLogger("derelayl")


def check_shapley(cfg) -> None:
    sc = cfg.shapley
    if sc.enabled not in (True, False, "auto"):
        raise ConfigError(f"shapley.enabled must be true, false or auto (got {sc.enabled!r})")
    check_parameters(permutations=int(sc.permutations), tolerance=float(sc.tolerance))


def wanted(cfg) -> bool:
    """``shapley.enabled``: true, false, or auto = on where it is cheap (DeRelayL's lineage)."""
    sc = cfg.get("shapley")
    if sc is None:
        return False
    if sc.enabled == "auto":
        return cfg.algorithm.name == "derelayl"
    return bool(sc.enabled)


def estimate(ctx: ExperimentContext, value, what: str) -> ShapleyResult:
    sc = ctx.cfg.shapley
    log.info("Shapley values of %d players (%s)", len(value.players), what)
    return shapley_values(value.players, value, exact_max=int(sc.exact_max),
                          permutations=int(sc.permutations), tolerance=float(sc.tolerance),
                          rng=numpy_rng(ctx.cfg.seed, "shapley"), convergence=sc.convergence)


def save(ctx: ExperimentContext, result: ShapleyResult, **extra: Any) -> dict[str, Any]:
    """Write shapley.json; return the summary metrics for metrics.json."""
    write_json(ctx.output_dir / "shapley.json", {
        "values": {str(k): v for k, v in result.values.items()}, "method": result.method,
        "permutations": result.permutations, "evaluations": result.evaluations,
        "full_value": result.full_value, "empty_value": result.empty_value, **extra})
    return {"shapley_players": len(result.values), "shapley_method": result.method,
            "shapley_permutations": result.permutations}


def participants_shapley(ctx: ExperimentContext, value) -> dict[str, Any]:
    """Relay and FL: every participant is a player; also correlates values with data size."""
    result = estimate(ctx, value, f"{ctx.cfg.algorithm.name}: coalitions rerun alone")
    sizes = {p.pid: len(p) for p in ctx.participants}
    players = list(value.players)
    metrics = save(ctx, result)
    metrics["shapley_data_size_spearman"] = spearman([sizes[p] for p in players],
                                                     [result.values[p] for p in players])
    return metrics
