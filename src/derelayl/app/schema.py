"""Types, ranges and finiteness of every config value, as one declarative table.

The structured schemas (:mod:`derelayl.app.config`) give every key its type, so Hydra refuses
``num_participants=abc`` or ``derelayl.rounds=2.5`` while composing (``derelayl.cli.guard``
words that refusal with this table's rule for the key). What a type cannot say, this table does:
ranges, finiteness (``algorithm.optimizer.lr=nan`` is a float), the allowed words, keys that a
type ``Any`` leaves open. :func:`check_config` checks the resolved config against :data:`RULES`
before any file, folder or tracking run exists, and raises a one-line :class:`ConfigError`
naming the key, what is allowed and what was given.

The table only describes values; cross-key rules (more clients than participants, enough
participants for the protocol's roles, test cases within the validation split) stay with the
components that own them. Keys absent from a composed config (a group not chosen) are skipped.
Keep it declarative: one rule per key pattern.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlparse

from derelayl.sim.errors import ConfigError


@dataclass(frozen=True)
class Number:
    """An int (``integer=True``) or a finite real, within bounds; ``optional``: null allowed."""

    integer: bool = False
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    optional: bool = False

    def bounds(self) -> str:
        lo = (
            f">= {_num(self.ge)}"
            if self.ge is not None
            else f"> {_num(self.gt)}"
            if self.gt is not None
            else None
        )
        hi = (
            f"<= {_num(self.le)}"
            if self.le is not None
            else f"< {_num(self.lt)}"
            if self.lt is not None
            else None
        )
        if lo and hi:
            left = "[" if self.ge is not None else "("
            right = "]" if self.le is not None else ")"
            a = self.ge if self.ge is not None else self.gt
            b = self.le if self.le is not None else self.lt
            assert a is not None and b is not None  # both bounds are set (lo and hi)
            return f"in {left}{_num(a)}, {_num(b)}{right}"
        return lo or hi or ""

    def kind(self) -> str:
        what = "an integer" if self.integer else "a finite number"
        bounds = self.bounds()
        what = f"{what} {bounds}" if bounds else what
        return f"{what} or null" if self.optional else what

    def check(self, label: str, value: Any) -> None:
        if value is None and self.optional:
            return
        ok_type = isinstance(value, int) and not isinstance(value, bool)
        if not self.integer:
            ok_type = ok_type or (isinstance(value, float) and math.isfinite(value))
        if not ok_type:
            raise ConfigError(f"{label} must be {self.kind()} (got {_show(value)})")
        if (
            (self.ge is not None and not value >= self.ge)
            or (self.gt is not None and not value > self.gt)
            or (self.le is not None and not value <= self.le)
            or (self.lt is not None and not value < self.lt)
        ):
            raise ConfigError(
                f"{label} must be {self.bounds()}"
                f"{' or null' if self.optional else ''} (got {_show(value)})"
            )


@dataclass(frozen=True)
class Flag:
    """true or false (``also``: further allowed words, e.g. ``auto``)."""

    also: tuple[str, ...] = ()

    def check(self, label: str, value: Any) -> None:
        if isinstance(value, bool) or value in self.also:
            return
        allowed = (
            ", ".join(("true", "false", *self.also)[:-1])
            + " or "
            + ("true", "false", *self.also)[-1]
        )
        raise ConfigError(f"{label} must be {allowed} (got {_show(value)})")


@dataclass(frozen=True)
class Text:
    """A string; ``nonempty``: not blank; ``optional``: null allowed."""

    nonempty: bool = True
    optional: bool = False

    def check(self, label: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if not isinstance(value, str) or (self.nonempty and not value.strip()):
            what = "a non-empty string" if self.nonempty else "a string"
            raise ConfigError(
                f"{label} must be {what}{' or null' if self.optional else ''} (got {_show(value)})"
            )


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def check(self, label: str, value: Any) -> None:
        if value not in self.options:
            raise ConfigError(f"unknown {label} {_show(value)}; allowed: {', '.join(self.options)}")


@dataclass(frozen=True)
class DeviceName:
    """auto, cpu, cuda, or cuda:<index>."""

    def check(self, label: str, value: Any) -> None:
        ok = value in ("auto", "cpu", "cuda") or (
            isinstance(value, str) and value.startswith("cuda:") and value[5:].isdigit()
        )
        if not ok:
            raise ConfigError(
                f"unknown {label} {_show(value)}; allowed: auto, cpu, cuda, cuda:<index>"
            )


@dataclass(frozen=True)
class Sizes:
    """A positive integer or a non-empty list of them (layer widths, channels)."""

    def check(self, label: str, value: Any) -> None:
        items = value if isinstance(value, list) else [value]
        if not items or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items
        ):
            raise ConfigError(
                f"{label} must be a positive integer or a list of them (got {_show(value)})"
            )


# URI schemes MLflow can track to (a database via SQLAlchemy, a server, Databricks, a file store)
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file")


@dataclass(frozen=True)
class TrackingUri:
    def check(self, label: str, value: Any) -> None:
        Text().check(label, value)
        parsed = urlparse(value)
        scheme = parsed.scheme.split("+")[0]
        if scheme not in TRACKING_SCHEMES:
            raise ConfigError(
                f"{label} {value!r} is not a tracking URI; allowed: "
                f"sqlite:///<file>, http(s)://<host>:<port>, postgresql://..., "
                f"mysql://..., mssql://..., databricks, file:<folder>"
            )
        if scheme == "sqlite" and not value.startswith("sqlite:///"):
            raise ConfigError(f"{label} {value!r}: a SQLite store is sqlite:///<path to a file>")
        if scheme in ("http", "https") and not parsed.hostname:
            raise ConfigError(f"{label} {value!r} names no host; allowed: http(s)://<host>:<port>")


# key (fnmatch pattern over the dotted path) -> rule, and the label used in messages
RULES: dict[str, Any] = {
    # top level
    "seed": Number(integer=True, ge=0),
    "num_participants": Number(integer=True, ge=1),
    "torch_threads": Number(integer=True, ge=1),
    "device": DeviceName(),
    "target_acc": Number(ge=0, le=1, optional=True),
    "optimized_metric": Text(),
    "knobs.rounds": Number(integer=True, ge=1),
    "knobs.alpha": Number(gt=0),
    "progress_every": Number(integer=True, ge=1),
    "paths.*": Text(),
    "prepared_data": Text(optional=True),
    "skip_finished": Flag(),
    "churn.enabled": Flag(),
    "churn.window": Number(integer=True, ge=1),
    "churn.join_rate": Number(ge=0),
    "churn.join_scale": Number(gt=0),
    "churn.pool_factor": Number(ge=1),
    "shapley.enabled": Flag(also=("auto",)),
    "shapley.exact_max": Number(integer=True, ge=0),
    "shapley.permutations": Number(integer=True, ge=1),
    "shapley.tolerance": Number(ge=0),
    "shapley.convergence": Number(ge=0),
    # dataset
    "dataset.val_fraction": Number(gt=0, lt=1),
    "dataset.test_fraction": Number(gt=0, lt=1),
    "dataset.num_samples": Number(integer=True, ge=1),
    "dataset.generator_seed": Number(integer=True, ge=0),
    "dataset.download": Flag(),
    "dataset.max_train_samples": Number(integer=True, ge=1, optional=True),
    "dataset.root": Text(),
    # partition
    "partition.alpha": Number(gt=0),
    "partition.beta": Number(gt=0),
    "partition.sigma": Number(ge=0),
    "partition.min_samples": Number(integer=True, ge=0),
    "partition.max_attempts": Number(integer=True, ge=1),
    "partition.classes_per_participant": Number(integer=True, ge=1),
    "partition.distribution": Choice(("dirichlet", "lognormal")),
    # model
    "model.net.hidden": Sizes(),
    "model.net.channels": Sizes(),
    "model.net.kernel_size": Number(integer=True, ge=1),
    "model.net.dropout": Number(ge=0, lt=1),
    # algorithm (the hop, the relay, the FL baselines)
    "algorithm.step_unit": Choice(("hop", "round")),
    "algorithm.batch_size": Number(integer=True, ge=1),
    "algorithm.local_epochs": Number(integer=True, ge=1),
    "algorithm.local_steps": Number(integer=True, ge=1, optional=True),
    "algorithm.eval_every": Number(integer=True, ge=1),
    "algorithm.rounds": Number(integer=True, ge=1, optional=True),
    "algorithm.budget_epochs": Number(gt=0, optional=True),
    "algorithm.sample_budget": Number(integer=True, ge=1, optional=True),
    "algorithm.client_fraction": Number(gt=0, le=1, optional=True),
    # its range, 1..num_participants, is checked with the participants (core.fl)
    "algorithm.clients_per_round": Number(integer=True, optional=True),
    "algorithm.server_lr": Number(gt=0),
    "algorithm.mu": Number(ge=0),
    "algorithm.execution": Choice(("auto", "sequential", "batched")),
    "algorithm.aggregator": Choice(("mean", "median", "trimmed_mean", "krum")),
    "algorithm.trim_fraction": Number(ge=0, lt=0.5),
    "algorithm.krum_f": Number(integer=True, ge=0),
    "algorithm.beta1": Number(ge=0, lt=1),
    "algorithm.beta2": Number(ge=0, lt=1),
    "algorithm.tau": Number(gt=0),
    "algorithm.optimizer.lr": Number(gt=0),
    "algorithm.optimizer.momentum": Number(ge=0),
    "algorithm.optimizer.weight_decay": Number(ge=0),
    # the DeRelayL protocol
    "derelayl.performance": Choice(("random_walk", "trained")),
    "derelayl.rounds": Number(integer=True, ge=1),
    "derelayl.active_share": Number(gt=0, lt=1),
    "derelayl.trainers_per_owner": Number(integer=True, ge=1),
    "derelayl.owner_budget": Number(ge=0),
    "derelayl.winner_share": Number(gt=0, le=1),
    "derelayl.dropout": Number(ge=0, lt=1),
    "derelayl.num_test_cases": Number(integer=True, ge=1),
    "derelayl.royalty": Number(ge=0),
    "derelayl.fee_*": Number(ge=0),
    "derelayl.deposit_records": Choice(("pair", "deposit")),
    "derelayl.no_winner": Choice(("keep_owners", "reset")),
    "derelayl.genesis_participant": Number(integer=True, ge=0),
    "derelayl.acceptance_margin": Number(ge=0, optional=True),
    "derelayl.version_depth": Number(integer=True, ge=0),
    "derelayl.random_walk.drift": Number(),
    "derelayl.random_walk.noise": Number(ge=0),
    "derelayl.random_walk.samples_per_hop": Number(ge=0),
    "derelayl.ledger": Flag(),
    "derelayl.checkpoint_every": Number(integer=True, ge=1),
    # incentive schemes
    "incentive.royalty": Number(ge=0),
    "incentive.royalty_rule": Choice(("authors", "once")),
    "incentive.reward": Number(ge=0),
    "incentive.rate": Number(ge=0),
    "incentive.mint_per_win": Number(ge=0),
    "incentive.gamma": Number(gt=0, le=1),
    # participants
    "participants.behaviour.*": Number(ge=0, le=1),
    "participants.noise_std": Number(ge=0),
    "participants.economics.*_sigma": Number(ge=0),
    "participants.economics.cost_per_sample": Number(ge=0),
    "participants.economics.cost_per_transfer": Number(ge=0),
    "participants.economics.model_value": Number(ge=0),
    "participants.economics.reservation_mean": Number(),
    "participants.economics.reservation_std": Number(ge=0),
    "participants.devices.*_sigma": Number(ge=0),
    "participants.devices.speed_*": Number(gt=0),
    "participants.devices.bandwidth_*": Number(gt=0),
    "participants.devices.server_speed": Number(gt=0),
    # tracking
    "tracking.enabled": Flag(),
    "tracking.uri": TrackingUri(),
    "tracking.experiment": Text(),
    "tracking.artifact_location": Text(optional=True),
    "tracking.run_name": Text(optional=True),
    "tracking.parent_run_id": Text(optional=True),
    "tracking.max_artifact_mb": Number(ge=0),
    "tracking.flush_every_s": Number(ge=0),
    "tracking.max_points": Number(integer=True, ge=0),
}

# keys every run needs (Hydra can delete a key: ``~seed``)
REQUIRED = (
    "seed",
    "num_participants",
    "torch_threads",
    "dataset._target_",
    "partition._target_",
    "model._target_",
    "algorithm.runner",
    "tracking.enabled",
    "tracking.uri",
    "tracking.experiment",
)

# how a few keys are named in messages (the symbol the protocol's description uses)
LABELS = {
    "derelayl.winner_share": "derelayl.winner_share (s)",
    "derelayl.trainers_per_owner": "derelayl.trainers_per_owner (k)",
    "derelayl.active_share": "derelayl.active_share (owners + trainers share)",
}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _leaves(node: Any, prefix: str = ""):
    """(dotted key, value) of every leaf; a key with a rule is a leaf whatever its value."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, Mapping) and v and rule_for(key) is None:
                yield from _leaves(v, key)
            else:
                yield key, v


def rule_for(key: str):
    if key in RULES:
        return RULES[key]
    for pattern, rule in RULES.items():
        if "*" in pattern and fnmatch.fnmatchcase(key, pattern):
            return rule
    return None


def check_values(values: Mapping[str, Any]) -> None:
    """Check a resolved config (nested mappings) against :data:`REQUIRED` and :data:`RULES`."""
    for key in REQUIRED:
        node: Any = values
        for part in key.split("."):
            node = node.get(part, _MISSING) if isinstance(node, Mapping) else _MISSING
        if node is _MISSING:
            raise ConfigError(
                f"{key} is missing: every run needs it (do not delete it with ~{key})"
            )
    for key, value in _leaves(values):
        rule = rule_for(key)
        if rule is not None:
            rule.check(LABELS.get(key, key), value)


_MISSING = object()


def check_config(cfg) -> None:
    """Resolve ``cfg`` (a DictConfig) and check every value; one-line ConfigError otherwise."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{key}: {first}" if key else first) from None
    check_values(cast(dict[str, Any], values))  # a DictConfig's container is a dict
