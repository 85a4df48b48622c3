"""Shared fixtures: compose the real Hydra config with every output pointed at tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from derelayl.cli.train import config_dir

ROOT = Path(__file__).resolve().parents[1]
# subprocesses (the CLI, DVC stages) import this checkout's package whatever their working
# directory, also where an installed copy or a relative PYTHONPATH=src would say otherwise
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "src")]
    + [
        p
        for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if p and Path(p).resolve() != ROOT / "src"
    ]
)


def tmp_overrides(tmp: Path) -> list[str]:
    """Every path a run reads or writes (data, MLflow store and artifacts, run folders) under
    ``tmp``: they all hang off ``paths.root_dir`` (conf/paths/default.yaml)."""
    return [f"paths.root_dir={tmp}"]


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg("dataset=mnist1d", ...)`` -> the composed config (tracking into tmp_path)."""

    def _make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name="train", overrides=tmp_overrides(tmp_path) + list(overrides))

    return _make


@pytest.fixture
def cli(tmp_path):
    """Run ``derelayl-train`` as a user would; returns the CompletedProcess."""

    def _run(
        *args: str, cwd: Path | None = None, timeout: int = 300
    ) -> subprocess.CompletedProcess:
        env = dict(os.environ, HYDRA_FULL_ERROR="0")
        flags = [a for a in args if a.startswith("-")]  # Hydra wants -m etc. before overrides
        rest = [a for a in args if not a.startswith("-")]
        cmd = [sys.executable, "-m", "derelayl.cli.train", *flags, *tmp_overrides(tmp_path), *rest]
        return subprocess.run(
            cmd, capture_output=True, text=True, cwd=cwd or tmp_path, env=env, timeout=timeout
        )

    return _run


@pytest.fixture
def cli_in_process(tmp_path, monkeypatch, capsys):
    """``derelayl-train`` run in this process (fast): returns (exit code, stdout, stderr)."""
    from derelayl.cli.train import main

    def _run(*args: str):
        flags = [a for a in args if a.startswith("-")]
        rest = [a for a in args if not a.startswith("-")]
        monkeypatch.setattr(
            sys, "argv", ["derelayl-train", *flags, *tmp_overrides(tmp_path), *rest]
        )
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """A tiny real sweep (2 seeds x 2 Dirichlet alphas, 1 round, 5 participants) logged to a
    fresh MLflow store under one parent run; shared by the report and MLflow UI tests."""
    tmp = tmp_path_factory.mktemp("study")
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    cmd = [
        sys.executable,
        "-m",
        "derelayl.cli.train",
        "-m",
        *tmp_overrides(tmp),
        "seed=0,1",
        "partition.alpha=0.1,1.0",
        "num_participants=5",
        "algorithm=relay",
        "algorithm.rounds=1",
        "progress_every=100",
        "tracking.experiment=tiny-study",
        f"hydra.sweep.dir={tmp}/sweep",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {
        "dir": tmp,
        "uri": f"sqlite:///{tmp}/mlflow.db",
        "experiment": "tiny-study",
        "sweep": tmp / "sweep",
        "artifacts": tmp / "mlartifacts",
        "log": proc.stderr,
    }


def make_incentive(name: str, **params):
    """The incentive scheme called ``name`` (``IncentiveScheme.name``), built directly as a run
    builds it from ``incentive._target_``."""
    from derelayl.protocol import incentives

    schemes = {
        c.name: c
        for c in (
            incentives.DeRelayLRoyalty,
            incentives.BoundedRoyalty,
            incentives.UniformReward,
            incentives.DataSizeReward,
            incentives.MarginalGainReward,
        )
    }
    return schemes[name](**params)


def assert_one_line_error(code: int, err: str, message: str) -> None:
    """Bad input: exit status 2, the message on the last stderr line, no traceback."""
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and message in lines[-1], err
    assert "Traceback" not in err
