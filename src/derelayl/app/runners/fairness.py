"""Shapley values of a finished run's participants (the fairness reference), for every algorithm.

Each algorithm supplies its value function (``derelayl.valuation.coalitions``); this module runs the
estimator with the ``shapley.*`` settings and writes ``shapley.json``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from derelayl.app.context import ExperimentContext
from derelayl.io.files import write_json
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import numpy_rng
from derelayl.valuation.shapley import ShapleyResult, check_parameters, shapley_values, spearman

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
        from derelayl.app.context import runner_of

        return runner_of(cfg).shapley_auto
    return bool(sc.enabled)


class ProgressValue:
    """A value function that logs how many coalitions it has evaluated, every ``every_s``
    seconds: a run's Shapley values take from seconds to minutes."""

    def __init__(self, value, total: int | None = None, every_s: float = 3.0):
        self.value, self.total, self.every_s = value, total, every_s
        self.players = value.players
        self.count = 0
        self.started = self.last = time.perf_counter()
        if not callable(getattr(value, "many", None)):
            # the value has no batched evaluation: neither has its wrapper (the instance
            # attribute hides the method from CachedValue's callable(getattr(v, "many")))
            self.many = None  # type: ignore[assignment,method-assign]

    def __call__(self, coalition) -> float:
        out = self.value(coalition)
        self._counted(1)
        return out

    def many(self, coalitions) -> list[float]:
        """A batch of coalitions at once (values that can: DeRelayL's lineage replays)."""
        out = self.value.many(coalitions)
        self._counted(len(out))
        return out

    def _counted(self, k: int) -> None:
        self.count += k
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            of = f"/{self.total}" if self.total else ""
            log.info(
                "Shapley: %d%s coalitions evaluated (%.0fs)", self.count, of, now - self.started
            )


def estimate(ctx: ExperimentContext, value, what: str) -> ShapleyResult:
    sc = ctx.cfg.shapley
    n = len(value.players)
    exact = n <= int(sc.exact_max)
    log.info(
        "Shapley values of %d players (%s; %s) ...",
        n,
        what,
        f"exact: {2**n} coalitions"
        if exact
        else f"truncated Monte Carlo, at most {int(sc.permutations)} permutations",
    )
    started = time.perf_counter()
    result = shapley_values(
        value.players,
        ProgressValue(value, 2**n if exact else None),
        exact_max=int(sc.exact_max),
        permutations=int(sc.permutations),
        tolerance=float(sc.tolerance),
        rng=numpy_rng(ctx.cfg.seed, "shapley"),
        convergence=sc.convergence,
    )
    log.info(
        "Shapley: done, %d coalitions%s (%.1fs)",
        result.evaluations,
        f" over {result.permutations} permutations" if result.permutations else "",
        time.perf_counter() - started,
    )
    return result


def save(ctx: ExperimentContext, result: ShapleyResult, **extra: Any) -> dict[str, Any]:
    """Write shapley.json; return the summary metrics for metrics.json."""
    write_json(
        ctx.output_dir / "shapley.json",
        {
            "values": {str(k): v for k, v in result.values.items()},
            "method": result.method,
            "permutations": result.permutations,
            "evaluations": result.evaluations,
            "full_value": result.full_value,
            "empty_value": result.empty_value,
            **extra,
        },
    )
    return {
        "shapley_players": len(result.values),
        "shapley_method": result.method,
        "shapley_permutations": result.permutations,
    }


def participants_shapley(ctx: ExperimentContext, value) -> dict[str, Any]:
    """Relay and FL: every participant is a player; also correlates values with data size."""
    result = estimate(ctx, value, "coalitions rerun alone")
    sizes = {p.pid: len(p) for p in ctx.participants}
    players = list(value.players)
    metrics = save(ctx, result)
    metrics["shapley_data_size_spearman"] = spearman(
        [sizes[p] for p in players], [result.values[p] for p in players]
    )
    return metrics
