"""``algorithm=fedavg|fedprox|scaffold|local|centralized``: the baselines the relay is measured
against, on the same data, partition, model, seed, hop, sample budget and cost axes.

Equal computation: unless ``algorithm.rounds`` is set, a run trains until it has made
``algorithm.sample_budget`` local sample passes, or ``budget_epochs x |training set|`` when that
is null. ``budget_epochs`` defaults to 5 = the relay's default (5 rounds x 1 local epoch: one relay
round = every participant trains once = one FedAvg round with full participation). To compare
with ``algorithm=derelayl``, set ``algorithm.sample_budget`` to its ``samples_seen``, or give every
method about the same computation with ``knobs=shared`` (``study=efficacy`` does).

Populations (fedavg, fedprox, scaffold): with ``churn.enabled=true`` or any
``participants.behaviour.<kind>`` fraction > 0 the run has DeRelayL's population: the same
behaviours, economics and churn (pool of ``churn.pool_size(N)`` identities holding data, the
first N active), the configured incentive settled every round, and the same population metrics.
"""

from __future__ import annotations

import csv

import numpy as np
from omegaconf import DictConfig

from derelayl.algorithms.baselines import CentralizedRunner, LocalRunner
from derelayl.algorithms.fl.runner import (
    FederatedPopulation,
    FederatedRunner,
    resolve_clients_per_round,
)
from derelayl.algorithms.fl.strategies import Scaffold
from derelayl.algorithms.rounds import RoundsResult
from derelayl.app.context import ExperimentContext, Outcome, Runner, build, resume, round_checkpoint
from derelayl.app.runners.fairness import check_shapley, participants_shapley, wanted
from derelayl.app.runners.population import (
    behaviour_fractions,
    churn_from_config,
    economics_params,
    population,
)
from derelayl.io.files import write_json
from derelayl.protocol.behaviours import BEHAVIOURS, adversarial_data, assign_behaviours
from derelayl.protocol.incentives import FederatedPayouts
from derelayl.protocol.population import behaviour_metrics
from derelayl.sim.errors import ConfigError
from derelayl.sim.stats import gini, jain
from derelayl.valuation.coalitions import FederatedCoalitionValue
from derelayl.valuation.shapley import pearson, spearman

# FL has no genesis participant; identity 0 stays honest as DeRelayL's default genesis does, so
# one seed makes the same identities adversarial under every algorithm
HONEST_IDENTITIES = (0,)


def sample_budget(algo: DictConfig, total_samples: int) -> int | None:
    """Total local sample passes, or None when ``algorithm.rounds`` fixes the run instead."""
    if algo.get("rounds") is not None:
        return None
    if algo.get("sample_budget") is not None:
        return int(algo.sample_budget)
    return int(round(float(algo.budget_epochs) * total_samples))


def check_config(cfg: DictConfig, federated: bool = True) -> None:
    """Reject impossible values before any data is built or any tracking run is opened."""
    algo = cfg.algorithm
    if algo.get("rounds") is not None and algo.rounds < 1:
        raise ConfigError(f"algorithm.rounds must be >= 1 or null (got {algo.rounds})")
    if algo.get("sample_budget") is not None and algo.sample_budget < 1:
        raise ConfigError(
            f"algorithm.sample_budget must be >= 1 or null (got {algo.sample_budget})"
        )
    if algo.get("budget_epochs") is not None and not algo.budget_epochs > 0:
        raise ConfigError(f"algorithm.budget_epochs must be > 0 (got {algo.budget_epochs})")
    if algo.get("eval_every", 1) < 1:
        raise ConfigError(f"algorithm.eval_every must be >= 1 (got {algo.eval_every})")
    if not algo.optimizer.get("lr", 1.0) > 0:
        raise ConfigError(f"algorithm.optimizer.lr must be > 0 (got {algo.optimizer.lr})")
    if federated:
        resolve_clients_per_round(
            int(cfg.num_participants), algo.get("clients_per_round"), algo.get("client_fraction")
        )
        if not algo.server_lr > 0:
            raise ConfigError(f"algorithm.server_lr must be > 0 (got {algo.server_lr})")
    if federated:
        churn_from_config(cfg)
        economics_params(cfg)
        assign_behaviours(
            int(cfg.num_participants), behaviour_fractions(cfg), np.random.default_rng(0)
        )
    strategy = build(algo.strategy) if federated else None  # it checks its own values
    if isinstance(strategy, Scaffold) and algo.optimizer.get("momentum", 0):
        raise ConfigError(
            "scaffold's option II control variates assume plain SGD steps: set "
            f"algorithm.optimizer.momentum=0 (got {algo.optimizer.momentum})"
        )
    node = cfg.get("participants", {}).get("devices")
    if node is not None:
        build(node)  # validates the device profile
    if "shapley" in cfg:
        check_shapley(cfg)
    from derelayl.learning.hop import LightningHop

    LightningHop(
        batch_size=algo.batch_size,
        local_epochs=algo.local_epochs,
        local_steps=algo.get("local_steps"),
    )


def _strategy(algo: DictConfig):
    """A fresh strategy object (``algorithm.strategy``): a coalition's rerun gets its own."""
    return build(algo.strategy)


def outcome(result: RoundsResult) -> Outcome:
    last = result.metrics
    tested = [r.metrics for r in result.history if "test_acc" in r.metrics]
    metrics = {
        "test_acc": last.get("test_acc"),
        "test_loss": last.get("test_loss"),
        "val_acc": last["val_acc"],
        "val_loss": last["val_loss"],
        "best_val_acc": max(r.metrics["val_acc"] for r in result.history),
        "best_test_acc": max(m["test_acc"] for m in tested),
        "hops": result.hops,
        "rounds": result.rounds,
        "samples_seen": result.samples_seen,
        "bytes": result.bytes,
        "sim_time_s": result.sim_time_s,
        "failed_clients": int(sum(r.metrics.get("failed_clients", 0) for r in result.history)),
    }
    for key in ("test_acc_worst", "test_acc_best", "val_acc_worst"):
        if key in last:
            metrics[key] = last[key]
    rows = [{"round": r.round, "hops": r.hops, **r.metrics} for r in result.history]
    return Outcome(metrics=metrics, model=result.model, history=rows, step="round")


def _schedule(ctx: ExperimentContext) -> dict:
    algo = ctx.cfg.algorithm
    total = sum(len(p) for p in ctx.participants)
    return {
        "seed": ctx.cfg.seed,
        "rounds": algo.get("rounds"),
        "sample_budget": sample_budget(algo, total),
        "eval_every": algo.get("eval_every", 1),
        "devices": ctx.devices,
        "observers": ctx.observers,
    }


def fl_population(ctx: ExperimentContext) -> FederatedPopulation | None:
    """The run's population, or None (the default: everybody honest, always there)."""
    cfg = ctx.cfg
    churn = churn_from_config(cfg)
    if not churn.enabled and not any(v > 0 for v in behaviour_fractions(cfg).values()):
        return None
    behaviour, economics = population(cfg, len(ctx.participants), honest=HONEST_IDENTITIES)
    return FederatedPopulation(
        behaviour=behaviour,
        economics=economics,
        churn=churn,
        initial_active=int(cfg.num_participants),
        noise_std=float(cfg.participants.get("noise_std", 1.0)),
    )


def incentive_metrics(ctx: ExperimentContext, run: RoundsResult) -> tuple[dict, np.ndarray]:
    """Coins of every participant under the configured incentive scheme (settled each round)."""
    payouts = run.payouts
    assert payouts is not None  # called when the run pays
    coins = payouts.coins
    held = coins if run.population is None else coins[run.population.active]
    write_json(
        ctx.output_dir / "participation.json",
        {
            "samples": [len(p) for p in ctx.participants],
            "rounds": [{"clients": list(sel), "gains": list(g)} for sel, g in run.participation],
            "coins": coins.tolist(),
        },
    )
    return {
        "incentive": payouts.scheme.name,
        "coins_total": float(coins.sum()),
        "coins_minted": payouts.minted,
        "coins_gini": gini(held),
        "coins_jain": jain(held),
    }, coins


def population_summary(ctx: ExperimentContext, run: RoundsResult, coins: np.ndarray) -> dict:
    """DeRelayL's population metrics (same names), and participants.csv."""
    people, last = run.population, run.metrics
    assert people is not None  # called when the run has a population
    metrics = {"coins_burned": 0.0}  # FL has no deposits
    for key in ("retention", "active_participants", "utility_positive_share"):
        metrics[key] = last[key]
    metrics.update(behaviour_metrics(people.behaviour, people.ever_active, coins, people.matches))
    with open(ctx.output_dir / "participants.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["participant", "behaviour", "active", "coins", "utility", "matches"])
        for i in np.flatnonzero(people.ever_active):
            w.writerow(
                [
                    int(i),
                    BEHAVIOURS[people.behaviour[i]],
                    int(people.active[i]),
                    coins[i],
                    people.utility[i],
                    int(people.matches[i]),
                ]
            )
    return metrics


def run_federated(ctx: ExperimentContext) -> Outcome:
    algo = ctx.cfg.algorithm
    m = resolve_clients_per_round(
        int(ctx.cfg.num_participants), algo.get("clients_per_round"), algo.get("client_fraction")
    )
    # C stays a fraction of the participants taking part (with churn: of the active ones)
    fraction = None if algo.get("clients_per_round") is not None else algo.get("client_fraction")
    pop = fl_population(ctx)
    participants = ctx.participants
    if pop is not None:
        participants = adversarial_data(participants, pop.behaviour, ctx.data.num_classes)
    node = ctx.cfg.get("incentive")
    payouts = None
    if node is not None:
        scheme = build(node)
        payouts = FederatedPayouts(scheme, [len(p) for p in ctx.participants])
    checkpoint = round_checkpoint(ctx)
    runner = FederatedRunner(
        ctx.hop,
        _strategy(algo),
        clients_per_round=m,
        **_schedule(ctx),
        track_gains=payouts is not None,
        payouts=payouts,
        population=pop,
        client_fraction=fraction,
        batched=ctx.batched_hop,
    )
    resume(ctx, checkpoint, runner)
    run = runner.run(ctx.new_model(), participants, ctx.data.val, ctx.data.test)
    result = outcome(run)
    coins = None
    if payouts is not None:
        paid, coins = incentive_metrics(ctx, run)
        result.metrics.update(paid)
        result.files.append(ctx.output_dir / "participation.json")
    if pop is not None:
        result.metrics.update(
            population_summary(
                ctx, run, coins if coins is not None else np.zeros(len(participants))
            )
        )
        result.files.append(ctx.output_dir / "participants.csv")
    if wanted(ctx.cfg):
        schedule = {**_schedule(ctx), "devices": None, "observers": ()}
        quiet = FederatedRunner(ctx.hop, _strategy(algo), clients_per_round=m, **schedule)
        # a coalition keeps the run's fraction of clients per round (or its fixed count); with a
        # population, the players are those ever active, each with its behaviour, and a
        # coalition's run has no churn (README, "Shapley values")
        players, behaviour = participants, None
        if pop is not None:
            assert run.population is not None  # the runner's outcome of ``pop``
            players = [participants[i] for i in np.flatnonzero(run.population.ever_active)]
            behaviour = {int(p.pid): int(pop.behaviour[p.pid]) for p in players}
        value = FederatedCoalitionValue(
            quiet,
            ctx.new_model(),
            players,
            ctx.data.test,
            client_fraction=fraction,
            behaviour=behaviour,
            noise_std=pop.noise_std if pop is not None else 1.0,
            # with batched execution, a batch of coalitions' runs in lockstep
            batched=ctx.batched_hop,
        )
        result.metrics.update(participants_shapley(ctx, value))
        if coins is not None:
            import json

            values = json.loads((ctx.output_dir / "shapley.json").read_text())["values"]
            phi = [values[str(p.pid)] for p in players]
            mine = coins[[p.pid for p in players]]
            result.metrics.update(
                coins_shapley_spearman=spearman(mine, phi), coins_shapley_pearson=pearson(mine, phi)
            )
    return result


def run_local(ctx: ExperimentContext) -> Outcome:
    checkpoint = round_checkpoint(ctx)
    runner = LocalRunner(ctx.hop, batched=ctx.batched_hop, **_schedule(ctx))
    resume(ctx, checkpoint, runner)
    return outcome(runner.run(ctx.new_model(), ctx.participants, ctx.data.val, ctx.data.test))


def run_centralized(ctx: ExperimentContext) -> Outcome:
    checkpoint = round_checkpoint(ctx)
    runner = CentralizedRunner(ctx.hop, **_schedule(ctx))
    resume(ctx, checkpoint, runner)
    return outcome(runner.run(ctx.new_model(), ctx.participants, ctx.data.val, ctx.data.test))


class Federated(Runner):
    """``algorithm.runner`` of ``algorithm=fedavg|fedprox|scaffold|fednova|fedadam``."""

    population = True

    def check_config(self, cfg: DictConfig) -> None:
        check_config(cfg)

    def __call__(self, ctx: ExperimentContext) -> Outcome:
        return run_federated(ctx)


class Local(Runner):
    """``algorithm.runner`` of ``algorithm=local``."""

    def check_config(self, cfg: DictConfig) -> None:
        check_config(cfg, federated=False)

    def __call__(self, ctx: ExperimentContext) -> Outcome:
        return run_local(ctx)


class Centralized(Local):
    """``algorithm.runner`` of ``algorithm=centralized``."""

    def __call__(self, ctx: ExperimentContext) -> Outcome:
        return run_centralized(ctx)
