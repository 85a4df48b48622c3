"""What stands between a command line and a run of ``derelayl-train``.

- :func:`one_line_errors`: every error Hydra or the config raises (an unknown key, bad override
  syntax, a missing config, a value of the wrong type) ends as one line on stderr and exit
  status 2; an interrupted run as one line and 128 + the signal's number. Hydra prints its own
  errors over several lines with exit 1 unless ``HYDRA_FULL_ERROR`` is set, so it is set while
  Hydra runs and its exceptions are described here instead.
- :class:`RunGuard`, a Hydra callback: before Hydra creates a run folder it notes which folders
  it will create (a refused run removes them again) and refuses an unwritable one; before a
  sweep launches its first job, it composes and checks every job's config, so a bad value in a
  sweep leaves no sweep folder and no MLflow parent run behind.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from hydra.experimental.callback import Callback

from derelayl.sim.errors import ConfigError, RunInterrupted

# sweeps up to this many jobs are checked job by job (a composition with the structured schemas
# costs ~0.5-1 s); larger ones value by value (every value of every swept key once)
MAX_CHECKED_JOBS = 24


class Refused(BaseException):
    """A refusal raised from a Hydra callback: Hydra turns an ``Exception`` raised there into a
    warning and carries on, so the callback wraps the one-line error in a BaseException."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _refusing(method):
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as err:
            raise Refused(err) from None

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


def _unknown_key(candidate: BaseException) -> bool:
    text = str(candidate)
    return "not in struct" in text or bool(re.match(r"Key '[^']*' not in '", text))


def _wrong_type(candidate: BaseException) -> str | None:
    """The one-line message of :mod:`derelayl.app.schema` for a value the structured schema
    refused while composing (``num_participants=abc``): the same words a range check uses."""
    from derelayl.app.schema import LABELS, rule_for

    key: str = getattr(candidate, "full_key", None) or ""
    rule = rule_for(key) if key else None
    if rule is None:
        return None
    try:
        rule.check(LABELS.get(key, key), getattr(candidate, "value", None))
    except ConfigError as err:
        return str(err)
    return None


def describe(err: BaseException) -> str:
    """One line for an error raised by Hydra or OmegaConf while composing the config."""
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        OmegaConfBaseException,
        ValidationError,
    )

    cause = err.__cause__
    for candidate in (cause, err):
        if isinstance(candidate, ValidationError):
            message = _wrong_type(candidate)
            if message:
                return message
        if isinstance(candidate, (ConfigKeyError, ConfigAttributeError)) and _unknown_key(
            candidate
        ):
            key = getattr(candidate, "full_key", None) or "?"
            parent = getattr(candidate, "parent_node", None)
            allowed = ""
            try:
                if parent is not None and hasattr(parent, "keys"):
                    allowed = ", ".join(str(k) for k in parent)
            except Exception:  # a node that cannot list its keys: name the key only
                allowed = ""
            where = key.rsplit(".", 1)[0] if "." in key else "the top level"
            hint = ""
            if key == "algorithm.rounds":
                hint = "; DeRelayL's rounds are derelayl.rounds"
            return (
                f"unknown key {key}"
                + (f"; allowed under {where}: {allowed}" if allowed else "")
                + hint
                + f" (to add a new key: +{key}=...)"
            )
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else type(err).__name__
    if type(err).__name__ == "OverrideParseException":
        return (
            f"bad override: {first} (syntax: key=value; see "
            f"https://hydra.cc/docs/advanced/override_grammar/basic)"
        )
    if type(err).__name__ == "MissingConfigException":
        options = [
            ln for ln in lines[1:] if not ln.startswith(("Available", "Config search", "provider="))
        ]
        return first + (f"; allowed: {', '.join(options)}" if options else "")
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        return f"{first}: {str(cause).strip().splitlines()[0]}"
    return first


@contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from derelayl.sim.errors import DataError

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        try:
            yield
        except Refused as refused:  # from a callback: re-raise what it refused with (its
            error = refused.error  # cause kept: describe() words a type error by it)
            raise error from error.__cause__
    except (ConfigError, DataError) as err:
        _fail(prog, str(err), 2)
    except (HydraException, OmegaConfBaseException) as err:
        _fail(prog, describe(err), 2)
    except RunInterrupted as stop:
        where = (
            f"; rerun the same command with hydra.run.dir={stop.run_dir} to resume it"
            if stop.run_dir
            else ""
        )
        _fail(
            prog,
            f"interrupted by {stop.name}: the MLflow run (if any) is closed as KILLED{where}",
            128 + stop.signum,
        )
    except KeyboardInterrupt:
        _fail(prog, "interrupted", 130)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def _fail(prog: str, message: str, code: int) -> None:
    message = " ".join(message.split("\n"))
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


class RunGuard(Callback):
    """Hydra callback (first in ``hydra.callbacks``): see the module docstring."""

    @_refusing
    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        from derelayl.io.run_folder import note_hydra_run_dir

        if not HydraConfig.initialized():  # hydra.run.dir is below ${hydra:runtime.cwd}
            HydraConfig.instance().set_config(config)
        note_hydra_run_dir(Path(str(config.hydra.run.dir)))

    @_refusing
    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        from derelayl.io.run_folder import writable_target

        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)
        writable_target(Path(str(config.hydra.sweep.dir)))
        check_sweep(config)


def sweep_jobs(config: Any) -> list[list[str]] | None:
    """Every job's overrides of a basic-sweeper sweep (None for other sweepers)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    sweeper = config.hydra.sweeper
    if "basic_sweeper" not in str(sweeper.get("_target_", "")):
        return None
    params = sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()]
    args += cast(list[str], OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    parser = OverridesParser.create()
    by_key = {ov.get_key_element(): ov for ov in parser.parse_overrides(args)}
    overrides = list(by_key.values())
    total = 1
    for ov in overrides:
        if ov.is_sweep_override():
            total *= len(list(ov.sweep_iterator()))
    if total <= MAX_CHECKED_JOBS:
        batches = BasicSweeper.split_arguments(overrides, None)
        return [list(job) for batch in batches for job in batch]
    # value by value: every value of every swept key once, the others at their first value
    firsts = []
    for ov in overrides:
        values = (
            list(ov.sweep_string_iterator())
            if ov.is_sweep_override()
            else [ov.get_value_element_as_str()]
        )
        firsts.append((ov, values))
    jobs = []
    for i, (ov, values) in enumerate(firsts):
        for value in values[1:] if ov.is_sweep_override() else []:
            job = [f"{o.get_key_element()}={v[0]}" for o, v in firsts]
            job[i] = f"{ov.get_key_element()}={value}"
            jobs.append(job)
    return jobs or [[f"{o.get_key_element()}={v[0]}" for o, v in firsts]]


def check_sweep(config: Any) -> None:
    """Compose and check every job of a sweep before the first one starts."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    from derelayl.app.runners import runner_of
    from derelayl.app.schema import check_config

    jobs = sweep_jobs(config)
    if not jobs or not GlobalHydra.instance().is_initialized():
        return
    swept = _swept_keys(config)
    loader = GlobalHydra.instance().config_loader()
    master = HydraConfig.instance().cfg
    if len(jobs) > 20:
        import logging

        logging.getLogger("derelayl").info(
            "checking the config of every sweep job (%d) before the first starts", len(jobs)
        )
    try:
        for job in jobs:
            job_cfg = loader.load_sweep_config(config, job)
            HydraConfig.instance().set_config(job_cfg)
            with read_write(job_cfg), open_dict(job_cfg):
                del job_cfg["hydra"]
            try:
                check_config(job_cfg)
                runner_of(job_cfg).check_config(job_cfg)
            except ConfigError as err:
                shown = [o for o in job if o.split("=", 1)[0] in swept] or job
                raise ConfigError(f"sweep job {' '.join(shown)}: {err}") from None
    finally:
        HydraConfig.instance().cfg = master


def _swept_keys(config: Any) -> set[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    params = config.hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()]
    args += cast(list[str], OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    try:
        return {
            ov.get_key_element()
            for ov in OverridesParser.create().parse_overrides(args)
            if ov.is_sweep_override()
        }
    except Exception:  # only used to shorten a message
        return set()
