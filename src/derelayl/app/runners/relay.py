"""``algorithm=relay``: the sequential one-baton relay."""

from __future__ import annotations

import dataclasses

from derelayl.algorithms.relay import RelayRunner
from derelayl.app.context import ExperimentContext, Outcome, Runner, build, resume, round_checkpoint
from derelayl.app.runners.fairness import check_shapley, participants_shapley, wanted
from derelayl.valuation.coalitions import RelayCoalitionValue


def run_relay(ctx: ExperimentContext) -> Outcome:
    algo = ctx.cfg.algorithm
    if "shapley" in ctx.cfg:
        check_shapley(ctx.cfg)
    checkpoint = round_checkpoint(ctx)
    runner = RelayRunner(
        ctx.hop,
        build(ctx.cfg.schedule),
        rounds=algo.rounds,
        seed=ctx.cfg.seed,
        eval_every=algo.eval_every,
        observers=ctx.observers,
        devices=ctx.devices,
    )
    resume(ctx, checkpoint, runner)
    result = runner.run(ctx.new_model(), ctx.participants, ctx.data.val, ctx.data.test)
    metrics = {
        "test_acc": result.test_acc,
        "test_loss": result.test_loss,
        "val_acc": result.val_acc,
        "val_loss": result.val_loss,
        "best_val_acc": max(r.val_acc for r in result.history),
        "hops": result.hops,
        "rounds": result.rounds,
        "samples_seen": result.samples_seen,
        "bytes": result.bytes,
        "sim_time_s": result.sim_time_s,
        "failed_hops": sum(r.failed for r in result.history),
    }
    if wanted(ctx.cfg):
        value = RelayCoalitionValue(
            RelayRunner(ctx.hop, runner.schedule, rounds=algo.rounds, seed=ctx.cfg.seed),
            ctx.new_model(),
            ctx.participants,
            ctx.data.test,
            # with batched execution, a batch of coalitions replays the run's hops in lockstep
            batched=ctx.batched_hop,
        )
        metrics.update(participants_shapley(ctx, value))
    return Outcome(
        metrics=metrics,
        model=result.model,
        history=[dataclasses.asdict(r) for r in result.history],
        step="hop",
    )


def check_config(cfg) -> None:
    """Reject impossible values before data, files or a tracking run exist."""
    if "shapley" in cfg:
        check_shapley(cfg)


class Relay(Runner):
    """``algorithm.runner`` of ``algorithm=relay``."""

    def check_config(self, cfg) -> None:
        check_config(cfg)

    def __call__(self, ctx: ExperimentContext) -> Outcome:
        return run_relay(ctx)
