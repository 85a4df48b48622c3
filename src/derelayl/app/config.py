"""The config's structured schemas: every group option's keys, their types and their defaults,
each written once.

Where defaults come from:

- a component built from ``_target_`` (a partitioner, schedule, incentive scheme, network,
  device profile, dataset loader) takes its keys, types and defaults from its own signature:
  :func:`component` reads them, so the code is their one source and the YAML option file only
  names the schema (and sets what a variant changes, e.g. ``partition/dirichlet_0.1.yaml``);
- the protocol's constants (``derelayl.*``), churn and the participants' economics take theirs
  from the core's parameter records (:func:`mirror` of ``DeRelayLParams``, ``ChurnParams``,
  ``EconomicsParams``), which check them;
- settings that belong to no single constructor (an algorithm's hop, budget and optimizer; the
  top level; tracking; paths) are the dataclasses below.

:func:`register` stores each schema in Hydra's ConfigStore as ``schema/<group>/<option>``; the
option file ``conf/<group>/<option>.yaml`` extends it (``/schema/<group>/<option>@_here_`` in its
defaults list) and the primary config extends ``schema/train``. Hydra then refuses a value of the
wrong type while composing (``num_participants=abc``); ranges and finiteness, which types cannot
say, are checked by the declarative table of :mod:`derelayl.app.schema`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

# OmegaConf types a field may have (anything else becomes Any)
_PRIMITIVES = (int, float, bool, str)


def _omegaconf_type(hint: Any) -> Any:
    """The nearest type OmegaConf 2.3 supports: primitives, Optional of them, List of them."""
    if hint in _PRIMITIVES:
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            inner = _omegaconf_type(rest[0])
            return Optional[inner] if inner is not Any else Any
        return Any
    if origin in (list, tuple, collections.abc.Sequence):
        items = [a for a in args if a is not Ellipsis]
        if len(items) == 1 and items[0] in _PRIMITIVES:
            return list[items[0]]  # type: ignore[valid-type]
    return Any


def _default(value: Any) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, (list, dict)):
        return field(default_factory=lambda: type(value)(value))
    return value


def _fields_of(target: Any, include: tuple[str, ...] | None, exclude: tuple[str, ...]):
    """(name, type, default) of a callable's keyword parameters or of a dataclass's fields."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target)
        items = [
            (
                f.name,
                hints.get(f.name, Any),
                f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING,
            )
            for f in dataclasses.fields(target)
        ]
    else:
        init = target.__init__ if inspect.isclass(target) else target
        hints = typing.get_type_hints(init)
        items = [
            (
                p.name,
                hints.get(p.name, Any),
                p.default if p.default is not inspect.Parameter.empty else dataclasses.MISSING,
            )
            for p in inspect.signature(target).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
    for name, hint, default in items:
        if name in exclude or (include is not None and name not in include):
            continue
        yield name, _omegaconf_type(hint), default


def _path(target: Any) -> str:
    return f"{target.__module__}.{target.__qualname__}"


def component(
    target: Any,
    *,
    partial: bool = False,
    exclude: tuple[str, ...] = (),
    include: tuple[str, ...] | None = None,
    name: str | None = None,
    path: str | None = None,
) -> type:
    """A schema for ``instantiate``: ``_target_`` (and ``_partial_``), then the target's
    parameters with the types and defaults of its signature. Parameters that come at run time
    (``exclude``: a network's input shape, the seed) stay out; with ``partial`` the object is
    built as ``functools.partial`` and called with them. ``path``: the ``_target_`` when
    ``target`` only describes its parameters (a torch-free record of a network's)."""
    specs: list[Any] = [("_target_", str, field(default=path or _path(target)))]
    if partial:
        specs.append(("_partial_", bool, field(default=True)))
    for key, hint, default in _fields_of(target, include, exclude):
        # a parameter without a default: "???" (OmegaConf's missing value) for the YAML to fill
        specs.append((key, hint, "???" if default is dataclasses.MISSING else _default(default)))
    return dataclasses.make_dataclass(name or f"{target.__name__}Config", specs)


def mirror(
    record: Any,
    *,
    exclude: tuple[str, ...] = (),
    name: str | None = None,
    extra: tuple[tuple[str, Any, Any], ...] = (),
) -> type:
    """A mutable schema with a core parameter record's fields, types and defaults (the record
    itself is frozen, and OmegaConf makes a frozen dataclass read-only), plus ``extra``."""
    specs: list[Any] = [
        (key, hint, _default(default)) for key, hint, default in _fields_of(record, None, exclude)
    ]
    specs += [(key, hint, _default(default)) for key, hint, default in extra]
    return dataclasses.make_dataclass(name or f"{record.__name__}Config", specs)


# -- settings that belong to no single constructor ------------------------------------------------
@dataclass
class PathsConfig:
    """Where a run reads and writes: one root, everything else below it by default."""

    root_dir: str = "${hydra:runtime.cwd}"
    data_dir: str = "${.root_dir}/data"
    output_dir: str = "${.root_dir}/outputs"


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///${paths.root_dir}/mlflow.db"
    experiment: str = "derelayl"
    artifact_location: str | None = "${paths.root_dir}/mlartifacts"
    run_name: str | None = None
    parent_run_id: str | None = None
    max_artifact_mb: float = 50.0
    flush_every_s: float = 1.0
    # a curve gets at most this many points (a longer run logs every ceil(steps / this)-th hop
    # or round, the first and the last; every step stays in the run folder); 0: all
    max_points: int = 1000


@dataclass
class ShapleyConfig:
    enabled: Any = "auto"  # true, false or auto (app.schema checks the word)
    exact_max: int = 8
    permutations: int = 100
    tolerance: float = 0.01
    convergence: float = 0.05


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = 0.05
    momentum: float = 0.0


def _sgd(lr: float, momentum: float):
    return field(default_factory=lambda: SGDConfig(lr=lr, momentum=momentum))


def _runner(target: str):
    return field(default_factory=lambda: {"_target_": target})


@dataclass
class HopAlgorithmConfig:
    """What every algorithm's hop needs (``derelayl.learning.hop.LightningHop``)."""

    runner: Any = None
    # the metric step of the algorithm (MLflow step, history.csv rows)
    step_unit: str = "round"
    local_epochs: int = 1
    local_steps: int | None = None
    batch_size: int = 10
    optimizer: SGDConfig = _sgd(0.05, 0.0)
    # how a round's hops run: auto | sequential | batched (one vmapped computation;
    # derelayl.learning.execution)
    execution: str = "auto"


@dataclass
class DeRelayLAlgorithmConfig(HopAlgorithmConfig):
    runner: Any = _runner("derelayl.app.runners.derelayl.DeRelayL")
    local_epochs: int = 3
    batch_size: int = 16
    optimizer: SGDConfig = _sgd(0.02, 0.9)


@dataclass
class RelayAlgorithmConfig(HopAlgorithmConfig):
    runner: Any = _runner("derelayl.app.runners.relay.Relay")
    step_unit: str = "hop"
    rounds: int = 5
    batch_size: int = 16
    eval_every: int = 1
    optimizer: SGDConfig = _sgd(0.02, 0.9)


@dataclass
class BudgetAlgorithmConfig(HopAlgorithmConfig):
    """Round-based algorithms that train to a sample budget (equal computation)."""

    budget_epochs: float = 5.0
    sample_budget: int | None = None
    rounds: int | None = None
    eval_every: int = 1


@dataclass
class LocalAlgorithmConfig(BudgetAlgorithmConfig):
    runner: Any = _runner("derelayl.app.runners.fl.Local")


@dataclass
class CentralizedAlgorithmConfig(BudgetAlgorithmConfig):
    runner: Any = _runner("derelayl.app.runners.fl.Centralized")


def _strategy(target: str, **keys: str):
    return field(
        default_factory=lambda: {
            "_target_": f"derelayl.algorithms.fl.strategies.{target}",
            **FEDAVG_STRATEGY_KEYS,
            **keys,
        }
    )


# the strategy reads the algorithm's own keys (one place to set them: algorithm.server_lr, ...)
FEDAVG_STRATEGY_KEYS = {
    "server_lr": "${..server_lr}",
    "aggregator": "${..aggregator}",
    "trim_fraction": "${..trim_fraction}",
    "krum_f": "${..krum_f}",
}


@dataclass
class FedAvgAlgorithmConfig(BudgetAlgorithmConfig):
    runner: Any = _runner("derelayl.app.runners.fl.Federated")
    client_fraction: float | None = 0.1
    clients_per_round: int | None = None
    local_epochs: int = 5
    server_lr: float = 1.0
    aggregator: str = "mean"
    trim_fraction: float = 0.1
    krum_f: int = 1
    strategy: Any = _strategy("FedAvg")


@dataclass
class FedProxAlgorithmConfig(FedAvgAlgorithmConfig):
    mu: float = 0.01
    strategy: Any = _strategy("FedProx", mu="${..mu}")


@dataclass
class ScaffoldAlgorithmConfig(FedAvgAlgorithmConfig):
    strategy: Any = _strategy("Scaffold", local_lr="${..optimizer.lr}")


@dataclass
class FedNovaAlgorithmConfig(FedAvgAlgorithmConfig):
    strategy: Any = _strategy("FedNova", momentum="${..optimizer.momentum}")


@dataclass
class FedAdamAlgorithmConfig(FedAvgAlgorithmConfig):
    server_lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 0.001
    strategy: Any = _strategy("FedAdam", beta1="${..beta1}", beta2="${..beta2}", tau="${..tau}")


@dataclass
class BehaviourConfig:
    """Adversaries by fraction of the population (the rest honest)."""

    dropout: float = 0.0
    free_rider: float = 0.0
    label_flip: float = 0.0
    noise: float = 0.0
    sybil: float = 0.0


@dataclass
class KnobsConfig:
    """One length and one Dirichlet concentration for every method (conf/knobs/)."""

    rounds: int = 30
    alpha: float = 0.5


# -- the registry ----------------------------------------------------------------------------------
def _schemas() -> dict[str, dict[str, Any]]:
    """``{group: {option: schema}}``; imported late (the core and torch load with it)."""
    from derelayl.algorithms import schedules
    from derelayl.data import datasets, partition
    from derelayl.models import hparams
    from derelayl.protocol import incentives

    loader: dict[str, Any] = {"exclude": ("seed",), "partial": True}
    return {
        "dataset": {
            "digits": component(datasets.digits, **loader),
            "mnist1d": component(datasets.mnist1d, **loader),
            "mnist": component(datasets.mnist, **loader),
            "fashion_mnist": component(datasets.fashion_mnist, **loader),
            "cifar10": component(datasets.cifar10, **loader),
        },
        "partition": {
            "iid": component(partition.IIDPartitioner),
            "dirichlet": component(partition.DirichletPartitioner),
            "shards": component(partition.ShardsPartitioner),
            "quantity": component(partition.QuantitySkewPartitioner),
            "feature_noise": component(partition.FeatureNoisePartitioner),
        },
        "schedule": {
            "ring": component(schedules.RingSchedule),
            "random": component(schedules.RandomSchedule),
            "largest_first": component(schedules.LargestFirstSchedule),
        },
        "incentive": {
            "derelayl": component(incentives.DeRelayLRoyalty),
            "derelayl_bounded": component(incentives.BoundedRoyalty),
            "uniform": component(incentives.UniformReward),
            "data_size": component(incentives.DataSizeReward),
            "marginal_gain": component(incentives.MarginalGainReward),
        },
        "model": {
            "mlp": _model_schema(hparams.MLPParams, "derelayl.models.nets.MLP"),
            "cnn": _model_schema(hparams.CNNParams, "derelayl.models.nets.CNN"),
        },
        "algorithm": {
            "derelayl": DeRelayLAlgorithmConfig,
            "relay": RelayAlgorithmConfig,
            "fedavg": FedAvgAlgorithmConfig,
            "fedprox": FedProxAlgorithmConfig,
            "scaffold": ScaffoldAlgorithmConfig,
            "fednova": FedNovaAlgorithmConfig,
            "fedadam": FedAdamAlgorithmConfig,
            "local": LocalAlgorithmConfig,
            "centralized": CentralizedAlgorithmConfig,
        },
        "derelayl": {"default": _protocol_schema()},
        "participants": {"mobile": _participants_schema()},
        "tracking": {"mlflow": TrackingConfig},
        "paths": {"default": PathsConfig},
        "knobs": {"shared": KnobsConfig},
        "": {"train": _train_schema()},
    }


def _model_schema(params: type, net: str) -> type:
    """``model/<net>``: the LightningModule around the network ``net`` (built later, with the
    data's shape), whose hyperparameters ``params`` records without importing torch."""
    name = net.rsplit(".", 1)[1]
    return dataclasses.make_dataclass(
        f"{name}ModelConfig",
        [
            # the module, by name: importing Lightning takes seconds, a model is built later
            ("_target_", str, field(default="derelayl.models.lit.ClassifierModule")),
            ("_partial_", bool, field(default=True)),
            (
                "net",
                Any,
                field(
                    default_factory=lambda: component(
                        params, partial=True, path=net, name=f"{name}Config"
                    )()
                ),
            ),
        ],
    )


def _protocol_schema() -> type:
    """``derelayl/default``: the protocol's parameters and the run's own keys."""
    from derelayl.protocol.params import DeRelayLParams
    from derelayl.protocol.quality import RandomWalkPerformance

    random_walk = mirror(
        RandomWalkPerformance,
        name="RandomWalkConfig",
        exclude=("num_participants", "genesis", "hashing", "samples"),
        extra=(("samples_per_hop", float, 64.0),),
    )
    return mirror(
        DeRelayLParams,
        name="DeRelayLConfig",
        exclude=("num_participants", "initial_active"),
        extra=(
            # random_walk: the authors' abstraction; trained: real models
            ("performance", str, "trained"),
            ("random_walk", random_walk, field(default_factory=random_walk)),
            ("ledger", bool, True),
            ("checkpoint_every", int, 1),
        ),
    )


def _participants_schema() -> type:
    from derelayl.protocol.population import EconomicsParams
    from derelayl.sim.devices import DeviceProfile

    return dataclasses.make_dataclass(
        "ParticipantsConfig",
        [
            ("devices", Any, field(default_factory=lambda: component(DeviceProfile)())),
            ("economics", Any, field(default_factory=lambda: mirror(EconomicsParams)())),
            ("behaviour", BehaviourConfig, field(default_factory=BehaviourConfig)),
            ("noise_std", float, 1.0),
        ],
    )


def _train_schema() -> type:
    """The primary config's own keys (``train.yaml``)."""
    from derelayl.protocol.population import ChurnParams

    return dataclasses.make_dataclass(
        "TrainConfig",
        [
            ("seed", int, 0),
            ("num_participants", int, 20),
            # CPU results are bit-identical only for a fixed number of torch threads
            ("torch_threads", int, 1),
            # where data, models and evaluation live: auto (a GPU when torch sees one) | cpu |
            # cuda | cuda:<index>
            ("device", str, "auto"),
            ("churn", Any, field(default_factory=lambda: mirror(ChurnParams)())),
            ("shapley", ShapleyConfig, field(default_factory=ShapleyConfig)),
            ("optimized_metric", str, "val_acc"),
            ("target_acc", Optional[float], 0.8),
            ("progress_every", int, 1),
            ("prepared_data", Optional[str], None),
            ("skip_finished", bool, True),
            # the groups (typed by their own options' schemas); the last four are optional
            *[
                (group, Any, None)
                for group in (
                    "paths",
                    "dataset",
                    "partition",
                    "model",
                    "algorithm",
                    "participants",
                    "tracking",
                    "schedule",
                    "incentive",
                    "derelayl",
                    "knobs",
                )
            ],
        ],
    )


_REGISTERED = False


def register() -> None:
    """Store every schema in Hydra's ConfigStore (once per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, options in _schemas().items():
        for option, schema in options.items():
            if group:
                store.store(group=f"schema/{group}", name=option, node=schema)
            else:
                store.store(name=f"{option}_schema", node=schema)
    _REGISTERED = True
