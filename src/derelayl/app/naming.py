"""Names that say what a run is: MLflow run names, and a sweep parent's name and tags.

A run is named by its algorithm, its data (the partition with its parameter; the dataset when not
the default), the keys it was launched with that differ from their defaults, and its seed:
``fedavg dirichlet(0.1) algorithm.optimizer.lr=0.01 seed=2``. A sweep's parent is named by its
study (the study preset, the experiment preset or the Optuna study) and what it varies:
``fairness: incentive=derelayl,derelayl_bounded,... x seed=0,1,2``.

What a run *is* (its algorithm, dataset, partition, model, incentive, adversaries) is the config
group options it was composed from: Hydra's ``runtime.choices`` (:func:`choices`), never a
``name`` key of the config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

MAX_NAME = 240  # MLflow keeps run names up to 250 characters
DEFAULT_DATASET = "digits"
# override keys that never enter a name: shown otherwise (the seed, the algorithm, the data) or
# bookkeeping; and key prefixes likewise
SKIPPED = (
    "seed",
    "algorithm",
    "dataset",
    "partition",
    "progress_every",
    "skip_finished",
    "prepared_data",
    "optimized_metric",
    "study",
    "knobs",
    "derelayl.performance",
    "partition.alpha",
    "partition.classes_per_participant",
    "partition.distribution",
    "partition.sigma",
)
SKIPPED_PREFIXES = ("tracking", "hydra", "paths")
# a partitioner's short name and the parameter it is known by (from its _target_ class)
PARTITIONERS = {
    "IIDPartitioner": ("iid", ()),
    "DirichletPartitioner": ("dirichlet", ("alpha",)),
    "ShardsPartitioner": ("shards", ("classes_per_participant",)),
    "QuantitySkewPartitioner": ("quantity", ("distribution",)),
    "FeatureNoisePartitioner": ("feature_noise", ("sigma",)),
}
# config groups whose choice is a tag of every run (and of a sweep parent)
GROUP_TAGS = ("algorithm", "dataset", "partition", "model", "incentive", "adversary")
# groups an algorithm composes for itself (DeRelayL: incentive)
PER_ALGORITHM = ("incentive",)


def choices(cfg: Any) -> dict[str, str]:
    """The config group options a config was composed from (``{"algorithm": "fedavg", ...}``),
    where it carries Hydra's record of them (``hydra.runtime.choices``: a sweep's launch config,
    a config composed with ``return_hydra_config=True``); else none. ``derelayl-train`` hands
    each run Hydra's ``runtime.choices`` itself (:func:`group_choices`)."""
    return group_choices(_get(cfg, "hydra.runtime.choices"))


def group_choices(found: Any) -> dict[str, str]:
    """Hydra's ``runtime.choices`` less Hydra's own groups and the specialisations (such as
    ``knobs/algorithm@_global_``): the top-level groups that have an option."""
    if not found:
        return {}
    return {
        str(k): str(v)
        for k, v in found.items()
        if v is not None and "/" not in str(k) and "@" not in str(k) and k != "hydra"
    }


def _key(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _skipped(key: str) -> bool:
    return key in SKIPPED or any(
        key == p or key.startswith((p + ".", p + "/")) for p in SKIPPED_PREFIXES
    )


def _get(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return None
        node = node.get(part)
    return node


def data_label(cfg: Any, chosen: Mapping[str, str] | None = None) -> str:
    """``dirichlet(0.5)``, ``shards(2)``, ``iid``; prefixed by the dataset when not digits."""
    chosen = choices(cfg) if chosen is None else chosen
    part = cfg.get("partition") or {}
    target = str(part.get("_target_", "")).rsplit(".", 1)[-1]
    name, keys = PARTITIONERS.get(target, (chosen.get("partition", "?"), ()))
    params = [str(part.get(k)) for k in keys if part.get(k) is not None]
    label = f"{name}({', '.join(params)})" if params else name
    dataset = chosen.get("dataset", DEFAULT_DATASET)
    return label if dataset == DEFAULT_DATASET else f"{dataset} {label}"


def algorithm_label(cfg: Any, chosen: Mapping[str, str] | None = None) -> str:
    chosen = choices(cfg) if chosen is None else chosen
    name = chosen.get("algorithm", "run")
    performance = _get(cfg, "derelayl.performance")
    if performance not in (None, "trained"):
        return f"{name}({performance})"
    return name


def uses_data(cfg: Any) -> bool:
    return _get(cfg, "derelayl.performance") != "random_walk"


def varied(
    overrides: Sequence[str],
    cfg: Any,
    base: Callable[[Sequence[str]], Any] | None = None,
    groups: Sequence[str] = (),
) -> list[str]:
    """The overrides worth naming: not bookkeeping, not shown otherwise, and (when ``base`` can
    compose the config of the group choices alone) different from their default there."""
    kept = [o for o in overrides if "=" in o and not _skipped(_key(o)[0])]
    if base is None or not kept:
        return kept
    choices = [o for o in overrides if _key(o)[0] in groups or _key(o)[0].split("/")[0] in groups]
    try:
        default = base(choices)
    except Exception:  # naming must never fail a run
        return kept
    out = []
    for o in kept:
        key = _key(o)[0]
        if key in groups:
            out.append(o)  # a group choice is named (its default is not in the overrides)
        elif _get(default, key) != _get(cfg, key) or _get(cfg, key) is None:
            out.append(o)
    return out


def run_name(
    cfg: Any, overrides: Sequence[str] = (), chosen: Mapping[str, str] | None = None
) -> str:
    """``<algorithm> [<data>] <varied keys> seed=<s>``."""
    chosen = choices(cfg) if chosen is None else chosen
    parts = [algorithm_label(cfg, chosen)]
    if uses_data(cfg):
        parts.append(data_label(cfg, chosen))
    parts += [f"{_key(o)[0]}={_key(o)[1]}" for o in overrides]
    parts.append(f"seed={cfg.get('seed')}")
    name = " ".join(parts)
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 3] + "..."


# -- sweeps ---------------------------------------------------------------------------------------
def sweep_axes(params: Mapping[str, Any], task_overrides: Sequence[str]) -> dict[str, str]:
    """``{key: values}`` of what a sweep varies: the sweeper's ``params`` (a preset's sweep, or
    Optuna's search space), then the command line's sweep overrides, which win for a key in both."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    axes = {str(k): str(v) for k, v in (params or {}).items()}
    parser = OverridesParser.create()
    for arg in task_overrides:
        try:
            ov = parser.parse_override(arg)
        except Exception:
            continue
        key = ov.get_key_element().lstrip("+~")
        if ov.is_sweep_override():
            axes[key] = ",".join(str(v) for v in ov.sweep_iterator())
        elif key in axes:  # a single value on the command line replaces the preset's sweep
            del axes[key]
    return axes


def sweep_name(
    study: str | None, axes: Mapping[str, str], total: int | None, optuna: bool = False
) -> str:
    """``<study>: key=values x key=values (n jobs)``; Optuna: ``optuna <study>: keys (n
    trials)``."""
    unit = "trials" if optuna else "jobs"
    if optuna:
        what = " x ".join(axes)
        head = f"optuna {study or 'study'}"
    else:
        what = " x ".join(f"{k}={v}" for k, v in axes.items())
        head = study or "sweep"
    name = f"{head}: {what or 'no sweep keys'}" + (f" ({total} {unit})" if total else "")
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 3] + "..."


def sweep_tags(chosen: Mapping[str, str], axes: Mapping[str, str]) -> dict[str, str]:
    """Tags of a sweep's parent: each group tag is the swept values where the sweep varies it
    (``algorithm: fedavg,scaffold``), else the launch config's choice (``chosen``: its
    ``hydra.runtime.choices``); ``sweep_varies`` lists the keys."""
    tags = {"sweep_varies": ", ".join(axes)}
    for group in GROUP_TAGS:
        if group in axes:
            tags[group] = axes[group]
            continue
        if group in PER_ALGORITHM and "algorithm" in axes:
            continue  # each job composes its algorithm's own (or none): the launch config's lies
        if chosen.get(group) is not None:
            tags[group] = str(chosen[group])
    return tags
