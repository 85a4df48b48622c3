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


def tmp_overrides(tmp: Path) -> list[str]:
    return [f"data_dir={tmp}/data", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.artifact_location={tmp}/mlartifacts"]


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

    def _run(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
        env = dict(os.environ, HYDRA_FULL_ERROR="0")
        flags = [a for a in args if a.startswith("-")]  # Hydra wants -m etc. before overrides
        rest = [a for a in args if not a.startswith("-")]
        cmd = [sys.executable, "-m", "derelayl.cli.train", *flags, *tmp_overrides(tmp_path), *rest]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or tmp_path,
                              env=env, timeout=timeout)

    return _run


@pytest.fixture
def cli_in_process(tmp_path, monkeypatch, capsys):
    """``derelayl-train`` run in this process (fast): returns (exit code, stdout, stderr)."""
    from derelayl.cli.train import main

    def _run(*args: str):
        flags = [a for a in args if a.startswith("-")]
        rest = [a for a in args if not a.startswith("-")]
        monkeypatch.setattr(sys, "argv", ["derelayl-train", *flags, *tmp_overrides(tmp_path), *rest])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run
