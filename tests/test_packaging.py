"""Packaging: what pyproject.toml promises, and the built wheel running the default job from a
folder outside the checkout.

The wheel test builds the wheel with the project's own build backend (hatchling, in the test
extra), installs it into a fresh virtual environment that reuses this environment's packages
(``--system-site-packages``: torch and the rest are not downloaded again; the wheel itself with
``--no-deps``), and runs ``derelayl-train`` and ``derelayl-ledger`` from that environment in an
empty folder, without this checkout on the path: the package and its Hydra config must come from
the wheel. It takes about a minute, so it is marked ``slow`` (``-m "not slow"`` leaves it out;
CI runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement(name: str) -> Requirement:
    return next(r for r in map(Requirement, PROJECT["dependencies"]) if r.name == name)


def test_python_3_11_to_3_13_are_allowed_and_no_other():
    spec = Requirement(f"python{PROJECT['requires-python']}").specifier
    assert [v for v in ("3.10", "3.11", "3.12", "3.13", "3.14") if Version(v) in spec] == [
        "3.11",
        "3.12",
        "3.13",
    ]
    classifiers = {
        c.rsplit(" ", 1)[-1]
        for c in PROJECT["classifiers"]
        if c.startswith("Programming Language :: Python :: 3.")
    }
    assert classifiers == {"3.11", "3.12", "3.13"}


def test_torch_and_torchvision_are_ranges_that_hold_the_installed_versions():
    import torch
    import torchvision

    for name, module in (("torch", torch), ("torchvision", torchvision)):
        spec = requirement(name).specifier
        assert not any(s.operator in ("==", "===") for s in spec), f"{name} is pinned: {spec}"
        assert any(s.operator in (">=", ">") for s in spec) and any(
            s.operator in ("<", "<=") for s in spec
        ), f"{name} is not a bounded range: {spec}"
        installed = Version(module.__version__.split("+")[0])
        assert installed in spec, f"{name} {installed} is outside {spec}"
    # torch.func (batched hops) and weights_only loading: what the lower bound must provide
    from torch.func import functional_call, grad_and_value, vmap  # noqa: F401

    assert Version("2.3") in requirement("torch").specifier


def clean_env() -> dict[str, str]:
    """This environment without anything that would put the checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["HYDRA_FULL_ERROR"] = "0"
    return env


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


@pytest.mark.slow
def test_the_wheel_runs_the_default_job_from_any_folder(tmp_path):
    pytest.importorskip("hatchling", reason="builds the wheel: pip install -e '.[test]'")
    dist = tmp_path / "dist"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            dist,
            ROOT,
        ],
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("derelayl-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", wheel],
        cwd=tmp_path,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(
        [
            python,
            "-c",
            "import json, derelayl, derelayl.cli.train as t; "
            "print(json.dumps([derelayl.__file__, str(t.config_dir())]))",
        ],
        cwd=elsewhere,
    )
    package, conf = map(Path, json.loads(where.stdout))
    site = Path(
        run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=elsewhere,
        ).stdout.strip()
    )
    assert package.is_relative_to(site), f"derelayl imported from {package}, not the wheel"
    assert conf == site / "derelayl" / "conf" and (conf / "train.yaml").is_file()
    assert not conf.is_relative_to(ROOT)

    # the default job, shortened (2 rounds, 8 participants, no Shapley values, no MLflow)
    run(
        [
            venv / "bin" / "derelayl-train",
            "derelayl.rounds=2",
            "num_participants=8",
            "shapley.enabled=false",
            "tracking=none",
        ],
        cwd=elsewhere,
    )
    (folder,) = (elsewhere / "outputs" / "runs").glob("*/*")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["rounds"] == 2 and 0 <= metrics["test_acc"] <= 1
    # Hydra read the wheel's config: the config source it records is inside the environment
    sources = (folder / ".hydra" / "hydra.yaml").read_text()
    assert str(conf) in sources and str(ROOT / "conf") not in sources

    verify = run([venv / "bin" / "derelayl-ledger", "verify", folder], cwd=elsewhere)
    assert verify.stdout.startswith("OK"), verify.stdout
