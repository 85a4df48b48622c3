"""What every round-based runner shares (federated learning, local, centralized): the run's
length (fixed rounds, or a budget of sample passes stopped where its total is nearest the
budget), a round's evaluation and record, and the result they return."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from derelayl.learning.evaluation import EvalSet, evaluate
from derelayl.sim.errors import ConfigError
from derelayl.sim.events import RoundRecord

if TYPE_CHECKING:  # the FL runner's extras in a result
    from derelayl.algorithms.fl.runner import PopulationOutcome
    from derelayl.protocol.incentives import FederatedPayouts


@dataclass(frozen=True)
class RoundsResult:
    """What a round-based run (FL, local, centralized) returns."""

    model: torch.nn.Module | None
    history: tuple[RoundRecord, ...]
    rounds: int
    hops: int  # local trainings (client updates)
    samples_seen: int
    bytes: int
    sim_time_s: float | None
    metrics: dict[str, float]  # the last round's metrics
    # FL only: per round, the participating clients and each one's gain (its local model's
    # validation accuracy minus the global model's before the round): what incentives pay for
    # (clients that were paid: the aggregated ones whose model changed, their gains)
    participation: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = ()
    payouts: FederatedPayouts | None = None  # settled round by round, when the run pays
    population: PopulationOutcome | None = None


def check_schedule(rounds: int | None, sample_budget: int | None, eval_every: int) -> None:
    if rounds is None and sample_budget is None:
        raise ConfigError(
            "set algorithm.rounds or a sample budget (algorithm.sample_budget / "
            "algorithm.budget_epochs)"
        )
    if rounds is not None and rounds < 1:
        raise ConfigError(f"algorithm.rounds must be >= 1 or null (got {rounds})")
    if rounds is None and sample_budget is not None and sample_budget < 1:
        raise ConfigError(f"algorithm.sample_budget must be >= 1 (got {sample_budget})")
    if eval_every < 1:
        raise ConfigError(f"algorithm.eval_every must be >= 1 (got {eval_every})")


def finished(
    rnd: int, samples_seen: int, rounds: int | None, sample_budget: int | None, round_samples: int
) -> bool:
    """Fixed rounds, or stop where the total is nearest the sample budget.

    With a budget the run stops after this round if one more round like it would end further
    from the budget than we are now (``samples_seen + round_samples / 2 >= budget``): neither
    side of the comparison gets a systematic extra half round of work.
    """
    if rounds is not None:
        return rnd >= rounds
    assert sample_budget is not None  # check_schedule: rounds or a sample budget
    return samples_seen + round_samples / 2 >= sample_budget


def run_length(rounds: int | None, sample_budget: int | None, expected: int) -> dict:
    """What ``on_run_start`` says about a run's length: exact ``rounds``, or (budgeted runs, whose
    last round is only known when the budget is reached) the ``sample_budget`` and an estimate."""
    if rounds is not None:
        return {"rounds": rounds}
    return {"rounds": None, "sample_budget": sample_budget, "expected_rounds": expected}


def estimate_rounds(rounds: int | None, sample_budget: int | None, per_round: float) -> int:
    if rounds is not None:
        return rounds
    assert sample_budget is not None  # check_schedule: rounds or a sample budget
    return max(math.ceil(sample_budget / max(per_round, 1e-9)), 1)


def evaluate_model(
    model: torch.nn.Module, validation: EvalSet, test: EvalSet, with_test: bool
) -> dict[str, float]:
    val_loss, val_acc = evaluate(model, validation)
    out = {"val_loss": val_loss, "val_acc": val_acc}
    if with_test:
        out["test_loss"], out["test_acc"] = evaluate(model, test)
    return out


def make_round_record(
    rnd: int,
    hops: int,
    samples_seen: int,
    nbytes: int,
    sim: float | None,
    metrics: dict[str, float],
) -> RoundRecord:
    """A round's record; metric names match the relay's per-hop metrics."""
    full = {**metrics, "samples_seen": samples_seen, "bytes": nbytes}
    if sim is not None:
        full["sim_time_s"] = sim
    return RoundRecord(round=rnd, hops=hops, samples_seen=samples_seen, metrics=full)
