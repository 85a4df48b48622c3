"""``algorithm=derelayl``: the DeRelayL protocol with a random-walk or trained performance model."""

from __future__ import annotations

import copy
import csv
import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
from omegaconf import DictConfig, OmegaConf

from derelayl.app.context import ExperimentContext, Outcome, Runner, build
from derelayl.app.runners.fairness import check_shapley, estimate, save, wanted
from derelayl.app.runners.population import churn_from_config, population
from derelayl.io.anchor import LedgerAnchor
from derelayl.io.ledger_files import MODELS_DIR, EconomyFiles, FileModelStore, read_ledger
from derelayl.io.run_folder import fingerprint as config_fingerprint
from derelayl.learning.evaluation import evaluate
from derelayl.protocol.behaviours import BEHAVIOURS, adversarial_data
from derelayl.protocol.ledger import Ledger
from derelayl.protocol.params import DeRelayLParams
from derelayl.protocol.population import behaviour_metrics
from derelayl.protocol.quality import PerformanceModel, RandomWalkPerformance
from derelayl.protocol.runner import DeRelayLRunner
from derelayl.protocol.state import EconomyState
from derelayl.protocol.trained import TrainedPerformance
from derelayl.sim.errors import ConfigError
from derelayl.sim.events import RoundRecord
from derelayl.valuation.coalitions import LineageCoalitionValue
from derelayl.valuation.shapley import pearson, spearman

log = logging.getLogger("derelayl")

PERFORMANCE_MODELS = ("random_walk", "trained")
PARAM_KEYS = (
    "rounds",
    "active_share",
    "trainers_per_owner",
    "owner_budget",
    "winner_share",
    "dropout",
    "num_test_cases",
    "royalty",
    "fee_per_deposit",
    "fee_per_commitment",
    "fee_per_test_case",
    "fee_per_tested_hash",
    "fee_per_ranked_model",
    "fee_per_model_case",
    "genesis_participant",
    "version_depth",
    "acceptance_margin",
    "deposit_records",
    "no_winner",
)


def params_from_config(cfg: DictConfig) -> DeRelayLParams:
    d = cfg.derelayl
    pool = churn_from_config(cfg).pool_size(int(cfg.num_participants))
    return DeRelayLParams(
        num_participants=pool,
        initial_active=int(cfg.num_participants),
        **{k: d[k] for k in PARAM_KEYS},
    )


def fingerprint(cfg: DictConfig) -> str:
    """What must match for a run directory to be resumed (tracking and printing may differ)."""
    return config_fingerprint(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))


def check_config(cfg: DictConfig) -> None:
    """Reject impossible protocol values before data, files or a tracking run exist."""
    check_shapley(cfg)
    params = params_from_config(cfg)
    churn_from_config(cfg)
    build(cfg.incentive)  # the scheme checks its own values
    population(cfg, params.num_participants, honest=(params.genesis_participant,))
    if cfg.derelayl.performance not in PERFORMANCE_MODELS:
        raise ConfigError(
            f"unknown derelayl.performance {cfg.derelayl.performance!r}; "
            f"allowed: {', '.join(PERFORMANCE_MODELS)}"
        )


def check_data(ctx: ExperimentContext) -> None:
    """Checks that need the data: enough validation samples for the test cases."""
    if ctx.cfg.derelayl.performance == "trained":
        cases, available = int(ctx.cfg.derelayl.num_test_cases), len(ctx.data.val)
        if cases > available:
            raise ConfigError(
                f"derelayl.num_test_cases={cases} exceeds the validation split "
                f"({available} samples); use at most {available}"
            )


def _performance(ctx: ExperimentContext, params: DeRelayLParams, behaviour: np.ndarray):
    """The performance model, its store, and each participant's declared sample count."""
    d = ctx.cfg.derelayl
    if d.performance == "random_walk":
        samples = np.full(params.num_participants, float(d.random_walk.samples_per_hop))
        return (
            RandomWalkPerformance(
                params.num_participants,
                params.genesis_participant,
                drift=d.random_walk.drift,
                noise=d.random_walk.noise,
                hashing=bool(d.ledger),
                samples=samples,
            ),
            None,
            samples,
        )
    if d.performance == "trained":
        store = FileModelStore(ctx.output_dir / MODELS_DIR)
        participants = adversarial_data(ctx.participants, behaviour, ctx.data.num_classes)
        perf = TrainedPerformance(
            ctx.new_model(),
            ctx.hop,
            participants,
            ctx.data.val,
            ctx.data.test,
            store,
            seed=ctx.cfg.seed,
            genesis=params.genesis_participant,
            devices=ctx.devices,
            noise_std=float(ctx.cfg.participants.get("noise_std", 1.0)),
            batched=ctx.batched_hop,
        )
        perf.check_cases(params.num_test_cases)
        return perf, store, np.array([len(p) for p in participants], dtype=np.float64)
    raise ConfigError(
        f"unknown derelayl.performance {d.performance!r}; allowed: {', '.join(PERFORMANCE_MODELS)}"
    )


def _write_participants(path, state: EconomyState, perf) -> None:
    best = (
        perf.best_test if isinstance(perf, TrainedPerformance) else 1.0 / (1.0 + np.exp(-perf.best))
    )
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "participant",
                "behaviour",
                "active",
                "coins",
                "utility",
                "gained",
                "lost",
                "matches",
                "wins",
                "newest_trained_version",
                "newest_held_version",
                "best_test_acc" if isinstance(perf, TrainedPerformance) else "best_quality",
            ]
        )
        for i in range(len(state.coins)):
            if not state.ever_active[i]:
                continue
            w.writerow(
                [
                    i,
                    BEHAVIOURS[state.behaviour[i]],
                    int(state.active[i]),
                    state.coins[i],
                    state.utility[i],
                    state.gained[i],
                    state.lost[i],
                    state.matches[i],
                    state.wins[i],
                    state.own_version[i],
                    state.held_version[i],
                    "" if not np.isfinite(best[i]) else best[i],
                ]
            )


def lineage_shapley(ctx: ExperimentContext, perf: TrainedPerformance, cfg: DictConfig):
    """Shapley values of the contributors on the best model's lineage (hops replayed)."""
    genesis = copy.deepcopy(perf.genesis_model())
    # with batched execution, a batch of coalitions replays the lineage in lockstep
    value = LineageCoalitionValue(
        ctx.hop,
        genesis,
        perf.lineage(),
        perf.participants,
        seed=cfg.seed,
        test=ctx.data.test,
        batched=ctx.batched_hop,
    )
    return estimate(ctx, value, f"the best model's lineage, {len(value.lineage)} hops")


def run_derelayl(ctx: ExperimentContext) -> Outcome:
    cfg, out = ctx.cfg, ctx.output_dir
    check_shapley(cfg)
    params = params_from_config(cfg)
    churn = churn_from_config(cfg)
    incentive = build(cfg.incentive)
    behaviour, economics = population(
        cfg, params.num_participants, honest=(params.genesis_participant,)
    )
    perf, store, declared = _performance(ctx, params, behaviour)
    files = EconomyFiles(
        out,
        params.num_participants,
        fingerprint(cfg),
        checkpoint_every=cfg.derelayl.checkpoint_every,
        total_rounds=params.rounds,
        store=store,
    )
    anchor = None
    if ctx.tracker is not None and cfg.derelayl.ledger:
        anchor = LedgerAnchor(ctx.tracker)  # the chain's head per round, outside the folder
    state, ledger, history = _resume(ctx, files, perf, anchor)
    if state is None:
        state = EconomyState.initial(
            params,
            active=params.initial_active,
            behaviour=behaviour,
            economics=economics,
            declared_samples=declared,
            window=churn.window,
            gamma=incentive.gamma if incentive.needs_decayed_lineage else None,
        )
    runner = DeRelayLRunner(
        params,
        perf,
        cfg.seed,
        observers=[files, *ctx.observers, *([anchor] if anchor else [])],
        keep_ledger=bool(cfg.derelayl.ledger),
        incentive=incentive,
        churn=churn,
    )
    try:
        result = runner.run(state, ledger, history)
    finally:  # (a stopped run's rounds were flushed as they settled)
        files.close()
    state, last = result.state, result.history[-1]

    figures = _economy_figures(cfg, out, files, result, params)
    _write_participants(out / "participants.csv", state, perf)
    metrics = _economy_metrics(result)
    model, history_rows = None, []
    metrics.update(coins_shapley_spearman=None, coins_shapley_pearson=None)
    if isinstance(perf, TrainedPerformance) and wanted(cfg):
        metrics.update(_shapley_metrics(ctx, perf, state, figures))
    if isinstance(perf, TrainedPerformance):
        model = perf.best_model()
        metrics.update(_model_metrics(ctx, model, last))
        history_rows = [
            {
                "round": r["round"],
                "val_acc": r["best_val_acc"],
                "test_acc": r["best_test_acc"],
                "samples_seen": r["samples_seen"],
                "bytes": r["bytes"],
                "sim_time_s": r["sim_time_s"],
            }
            for r in result.history
        ]
    else:
        metrics.update(test_acc=None, test_loss=None, best_quality=last["best_quality"])
    extra = [out / "participants.csv", out / "rounds.jsonl"]
    if cfg.derelayl.ledger:
        extra.append(out / "ledger.jsonl")
    return Outcome(
        metrics=metrics, model=model, history=history_rows, step="round", files=figures + extra
    )


def _economy_figures(cfg, out, files: EconomyFiles, result, params: DeRelayLParams) -> list:
    """Coins per participant and version shares over the rounds (PNG files)."""
    # matplotlib: only now
    from derelayl.reporting.economy_plots import plot_coins, plot_version_shares

    return [
        plot_coins(
            files.coins_matrix(),
            out / "coins_per_participant.png",
            title=f"coins per participant (N={params.num_participants}, "
            f"{cfg.derelayl.performance})",
        ),
        plot_version_shares(result.history, out / "version_shares.png", params.version_depth),
    ]


def _resume(
    ctx: ExperimentContext, files: EconomyFiles, perf: PerformanceModel, anchor: LedgerAnchor | None
) -> tuple[Any, Ledger | None, Any]:
    """The state, ledger and history of the folder's checkpoint (Nones for a fresh run); the
    observers (the new tracking run, the history file) get the settled rounds again."""
    ckpt = files.load()
    if ckpt is None:
        return None, None, None
    state, history = ckpt["state"], ckpt["history"]
    perf.load_state_dict(ckpt["perf"])
    ledger = Ledger(*ckpt["ledger"]) if ckpt["ledger"] is not None else None
    log.info("resuming %s after %d settled rounds", ctx.output_dir, state.round)
    for row in history:
        metrics = {k: v for k, v in row.items() if k != "round"}
        record = RoundRecord(
            round=row["round"],
            hops=int(row["num_trained"]),
            samples_seen=int(row["samples_seen"]),
            metrics=metrics,
        )
        for o in ctx.observers:
            o.on_round(record)
    if anchor is not None:
        anchor.replay(read_ledger(files.ledger_path), state.round)
    return state, ledger, history


def _economy_metrics(result: Any) -> dict[str, Any]:
    """Coins, versions, the population and the behaviours' outcomes at the end of the run."""
    state, last = result.state, result.history[-1]
    metrics = {
        "rounds": result.rounds,
        "hops": int(sum(r["num_trained"] for r in result.history)),
        "samples_seen": int(state.samples_seen),
        "coins_total": float(state.coins.sum()),
        "coins_minted": state.minted,
        "coins_burned": state.burned,
    }
    for key in (
        "coins_gini",
        "coins_jain",
        "version_share_latest",
        "version_share_within_10",
        "version_share_none",
        "utility_positive_share",
        "num_owners",
        "retention",
        "active_participants",
    ):
        metrics[key] = last[key]
    metrics.update(
        behaviour_metrics(
            state.behaviour,
            state.ever_active,
            state.coins,
            state.matches,
            state.wins,
            state.hops,
            state.hop_gain,
        )
    )
    return metrics


def _shapley_metrics(
    ctx: ExperimentContext, perf: TrainedPerformance, state: EconomyState, figures: list[Path]
) -> dict[str, Any]:
    """How coins rank against the lineage Shapley values (its figure added to ``figures``)."""
    from derelayl.reporting.economy_plots import plot_reward_vs_shapley  # matplotlib

    shapley = lineage_shapley(ctx, perf, ctx.cfg)
    ever = np.flatnonzero(state.ever_active)
    phi = np.array([shapley.values.get(int(i), 0.0) for i in ever])
    metrics = {
        "coins_shapley_spearman": spearman(state.coins[ever], phi),
        "coins_shapley_pearson": pearson(state.coins[ever], phi),
    }
    metrics.update(save(ctx, shapley, lineage=perf.lineage()))
    figures.append(
        plot_reward_vs_shapley(
            state.coins[ever],
            phi,
            ctx.output_dir / "coins_vs_shapley.png",
            behaviour=state.behaviour[ever],
        )
    )
    return metrics


def _model_metrics(ctx: ExperimentContext, model: Any, last: dict[str, Any]) -> dict[str, Any]:
    """The best model's test and validation numbers, and the last round's costs."""
    test_loss, test_acc = evaluate(model, ctx.data.test)
    val_loss, val_acc = evaluate(model, ctx.data.val)
    return dict(
        test_acc=test_acc,
        test_loss=test_loss,
        val_acc=val_acc,
        val_loss=val_loss,
        mean_participant_best_test_acc=last["mean_participant_best_test_acc"],
        bytes=int(last["bytes"]),
        sim_time_s=last["sim_time_s"],
    )


class DeRelayL(Runner):
    """``algorithm.runner`` of ``algorithm=derelayl``. Its performance model is chosen by the
    public key ``derelayl.performance`` (a value rather than a config group, so that
    ``derelayl.performance=random_walk`` keeps working) and built here from ``derelayl.random_walk``
    or, for ``trained``, from the run's model, hop, participants and data."""

    population = True
    shapley_auto = True

    def uses_data(self, cfg: DictConfig) -> bool:
        return cfg.derelayl.performance == "trained"

    def check_config(self, cfg: DictConfig) -> None:
        check_config(cfg)

    def check_data(self, ctx: ExperimentContext) -> None:
        check_data(ctx)

    def __call__(self, ctx: ExperimentContext) -> Outcome:
        return run_derelayl(ctx)
