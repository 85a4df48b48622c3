"""What every algorithm's runner receives and returns."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from derelayl.data.datasets import DatasetSplits
from derelayl.data.participants import ParticipantData, build_participants
from derelayl.data.partition import Partition
from derelayl.sim.devices import Devices
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import derive_seed, numpy_rng

log = logging.getLogger("derelayl")

if TYPE_CHECKING:  # Lightning is imported when a model or hop is built, not by data-only commands
    from derelayl.learning.batched import BatchedHop
    from derelayl.learning.hop import LightningHop
    from derelayl.models.lit import ClassifierModule


def build(node: Any, **kwargs):
    """``hydra.utils.instantiate`` that lets a ConfigError from the target through unwrapped."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


class Runner:
    """What ``algorithm.runner`` builds (``_target_``): an algorithm's adapter from the config to
    the core. Subclasses say which run-time pieces they need and check what they own."""

    #: the run has DeRelayL's population (``churn.*``: a join pool holds data beyond N)
    population = False
    #: ``shapley.enabled=auto`` turns Shapley values on (DeRelayL: its lineage is cheap)
    shapley_auto = False

    def uses_data(self, cfg: DictConfig) -> bool:
        """Whether the run needs the dataset and the partition."""
        return True

    def check_config(self, cfg: DictConfig) -> None:
        """Reject impossible values before data, files or a tracking run exist."""

    def check_data(self, ctx: ExperimentContext) -> None:
        """Checks that need the data (before anything is written)."""

    def __call__(self, ctx: ExperimentContext) -> Outcome:
        raise NotImplementedError


def runner_of(cfg: DictConfig) -> Runner:
    """The algorithm's runner, built from ``algorithm.runner``."""
    node = cfg.algorithm.get("runner")
    if node is None:
        raise ConfigError(
            "algorithm.runner is missing: every algorithm names its runner "
            "(_target_, e.g. derelayl.app.runners.fl.Federated)"
        )
    return build(node)


@dataclass
class ExperimentContext:
    """The pieces of an experiment, each built on first use from the config and the seed."""

    cfg: DictConfig
    output_dir: Path
    observers: list = field(default_factory=list)
    tracker: Any = None  # the MLflow tracker, when the run is tracked (e.g. to anchor a ledger)
    writer: Any = None  # the MLflow writer process, started while the run prepares

    @cached_property
    def device(self) -> torch.device:
        """Where data, models and evaluation live (``device=auto|cpu|cuda``)."""
        from derelayl.learning.execution import resolve_device

        return resolve_device(str(self.cfg.get("device", "auto")))

    @cached_property
    def data(self) -> DatasetSplits:
        """The dataset's fixed splits, on :attr:`device`."""
        return self._load_data().to(self.device)

    def _load_data(self) -> DatasetSplits:
        ds = self.cfg.dataset
        if self.cfg.get("prepared_data"):  # splits materialised by the DVC prepare stage
            from derelayl.data.prepared import load_splits, split_dir

            return load_splits(
                split_dir(self.cfg.prepared_data, self.cfg.seed),
                dataset_cfg=cast(dict[str, Any], OmegaConf.to_container(ds, resolve=True)),
                seed=self.cfg.seed,
            )
        return build(ds)(seed=int(self.cfg.seed))

    @cached_property
    def runner(self) -> Runner:
        return runner_of(self.cfg)

    @property
    def population_size(self) -> int:
        """Participants holding data: N, or the join pool when churn is on (DeRelayL, FL)."""
        churn = self.cfg.get("churn")
        if churn is not None and churn.get("enabled") and self.runner.population:
            return int(round(int(self.cfg.num_participants) * float(churn.pool_factor)))
        return int(self.cfg.num_participants)

    @cached_property
    def partition(self) -> Partition:
        if self.cfg.get("prepared_data"):  # index sets materialised by the DVC partition stage
            from derelayl.data.prepared import load_partition, partition_dir

            return load_partition(
                partition_dir(self.cfg.prepared_data, self.cfg.seed), key=self.partition_key()
            )
        return self.compute_partition()

    def partition_key(self) -> dict[str, Any]:
        """What a materialised partition must have been made for to be reused by this run."""
        from derelayl.data.prepared import partition_key

        return partition_key(
            cast(dict[str, Any], OmegaConf.to_container(self.cfg.dataset, resolve=True)),
            cast(dict[str, Any], OmegaConf.to_container(self.cfg.partition, resolve=True)),
            self.cfg.seed,
            self.cfg.num_participants,
        )

    def compute_partition(self) -> Partition:
        partitioner = build(self.cfg.partition)
        return partitioner.split(
            self.data.train_y.cpu().numpy(),
            self.population_size,
            numpy_rng(self.cfg.seed, "partition"),
        )

    @cached_property
    def label_histogram(self) -> np.ndarray:
        return self.partition.label_histogram(
            self.data.train_y.cpu().numpy(), self.data.num_classes
        )

    @cached_property
    def participants(self) -> list[ParticipantData]:
        return build_participants(
            self.data.train_x, self.data.train_y, self.partition, self.cfg.seed
        )

    @cached_property
    def devices(self) -> Devices | None:
        """Each participant's simulated compute speed and bandwidth (``participants.devices``)."""
        node = self.cfg.get("participants", {}).get("devices")
        if node is None:
            return None
        return build(node).draw(self.population_size, numpy_rng(self.cfg.seed, "devices"))

    def new_model(self, stream: str = "model_init") -> ClassifierModule:
        """A freshly initialised model (same weights for the same seed and stream)."""
        if "pytorch_lightning" not in sys.modules:  # the first model: a ~2 s import
            log.info("building the model (importing PyTorch Lightning) ...")
        from derelayl.learning.contract import check_hop_module

        torch.manual_seed(derive_seed(self.cfg.seed, stream))
        model = self.cfg.model  # the module (_partial_) around its network (_partial_)
        net = build(model.net)(
            input_shape=list(self.data.input_shape), num_classes=self.data.num_classes
        )
        module = build(model, _recursive_=False)  # its net: the one just built
        module = module(net=net, optimizer=build(self.cfg.algorithm.optimizer)).to(self.device)
        return check_hop_module(module)

    @cached_property
    def hop(self) -> LightningHop:
        from derelayl.learning.hop import LightningHop

        algo = self.cfg.algorithm
        return LightningHop(
            batch_size=algo.batch_size,
            local_epochs=algo.local_epochs,
            local_steps=algo.get("local_steps"),
        )

    @cached_property
    def batched_hop(self) -> BatchedHop | None:
        """A round's hops as one batched computation, if ``algorithm.execution`` chooses it
        for this model on this device (None: one after another, :attr:`hop`)."""
        from derelayl.learning.execution import batched_hop

        algo = self.cfg.algorithm
        with torch.random.fork_rng(devices=[]):  # a probe model: leave torch's RNG as it was
            probe = self.new_model()
        return batched_hop(
            str(algo.get("execution", "auto")),
            probe,
            self.device,
            batch_size=algo.batch_size,
            local_epochs=algo.local_epochs,
            local_steps=algo.get("local_steps"),
        )


@dataclass
class Outcome:
    """What a finished run hands back to the pipeline."""

    metrics: dict[str, Any]  # at least test_acc, test_loss, hops, rounds, samples_seen
    model: torch.nn.Module | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # rows for the accuracy plot
    step: str = "hop"  # the unit of the metric step: "hop" or "round"
    files: list[Path] = field(default_factory=list)  # extra artifacts written by the runner


def round_checkpoint(ctx: ExperimentContext):
    """A per-round checkpoint (``checkpoint.npz``) for a round-based runner, as an observer:
    build it before the runner (which takes its observers at construction), then
    :func:`resume` the runner."""
    from derelayl.io.checkpoint import CHECKPOINT_FILE, RoundCheckpoint
    from derelayl.io.run_folder import fingerprint

    checkpoint = RoundCheckpoint(
        ctx.output_dir / CHECKPOINT_FILE,
        fingerprint(cast(dict[str, Any], OmegaConf.to_container(ctx.cfg, resolve=True))),
    )
    ctx.observers.append(checkpoint)
    return checkpoint


def resume(ctx: ExperimentContext, checkpoint, runner) -> None:
    """Attach ``runner`` to its checkpoint; if the run folder holds one, load it and replay the
    settled rounds to the observers (history file, MLflow), as DeRelayL's resume does."""
    import logging

    from derelayl.sim.events import HopRecord, RoundRecord

    checkpoint.runner = runner
    state = checkpoint.load()
    if state is None:
        return
    runner.load_state_dict(state)
    logging.getLogger("derelayl").info(
        "resuming %s after %d settled rounds", ctx.output_dir, state["round"]
    )
    observers = [o for o in ctx.observers if o is not checkpoint]
    if "hop" in state:  # the relay: hops, and a round record after each round's last hop
        rows = [HopRecord(**row) for row in state["history"]]
        for i, record in enumerate(rows):
            for o in observers:
                o.on_hop(record)
            if i + 1 == len(rows) or rows[i + 1].round != record.round:
                for o in observers:
                    o.on_round(
                        RoundRecord(
                            round=record.round, hops=record.hop, samples_seen=record.samples_seen
                        )
                    )
        return
    for row in state["history"]:
        round_record = RoundRecord(**row)
        for o in observers:
            o.on_round(round_record)
