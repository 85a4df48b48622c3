"""Every command printed in README.md works as printed.

- every ``derelayl-train`` command composes (``--cfg job``; a ``-m`` sweep: each of its jobs);
- every other command's options exist (``<command> --help``), and ``pip install`` names extras
  that pyproject.toml has;
- the set-up commands and one example of each CLI run for real, in a fresh folder: the default
  ``derelayl-train``, ``mlflow ui``, ``derelayl-ledger verify`` / ``show`` on that run, and
  ``derelayl-report --experiment derelayl`` on its MLflow store. The README's ``dvc`` commands run
  for real in tests/test_dvc_pipeline.py. ``pip install`` runs only when asked to (see below), and
  ``python -m pytest`` is this suite.
"""

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, tmp_overrides
from readme import commands_of, shell_commands

PYTHON_MODULES = {"derelayl-train": "derelayl.cli.train", "derelayl-ledger": "derelayl.cli.ledger",
                  "derelayl-report": "derelayl.cli.report", "derelayl-prepare": "derelayl.cli.prepare",
                  "derelayl-partition": "derelayl.cli.partition", "mlflow": "mlflow"}
# programs this file checks; dvc's commands run in tests/test_dvc_pipeline.py
CHECKED = {"derelayl-train", "derelayl-ledger", "derelayl-report", "mlflow", "pip", "python", "dvc"}
# shell builtins that only set the environment of the commands that follow them
BUILTINS = {"export"}


def argv(program: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", PYTHON_MODULES[program], *args]


def test_the_readme_has_commands_and_every_program_is_checked():
    commands = shell_commands()
    assert len(commands) > 30
    programs = {shlex.split(c)[0] for c in commands} - BUILTINS
    assert programs <= CHECKED, programs - CHECKED
    assert commands_of("dvc"), "the DVC commands are run by tests/test_dvc_pipeline.py"


def jobs(args: list[str]) -> list[list[str]]:
    """A command's jobs: itself, or (``-m``) jobs that give every value of every sweep override
    at least once (each with the other keys' first values: their product adds nothing that one
    composition at a time would not catch)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if "-m" not in args and "--multirun" not in args:
        return [args]
    rest = [a for a in args if a not in ("-m", "--multirun")]
    parser = OverridesParser.create()
    choices = []
    for a in rest:
        ov = parser.parse_override(a)
        if ov.is_sweep_override():
            key = a.split("=", 1)[0]
            choices.append([f"{key}={v}" for v in ov.sweep_iterator()])
        else:
            choices.append([a])
    first = [c[0] for c in choices]
    out = [first]
    for i, values in enumerate(choices):
        out += [first[:i] + [v] + first[i + 1:] for v in values[1:]]
    return out


@pytest.mark.parametrize("args", commands_of("derelayl-train"), ids=" ".join)
def test_every_derelayl_train_command_composes(args, cli_in_process):
    for job in jobs(args):
        code, out, err = cli_in_process(*job, "--cfg=job")
        assert code == 0 and "Traceback" not in err, (job, err[-2000:])
        assert "algorithm:" in out and "seed:" in out, out[:500]


def help_flags(program: str, sub: list[str]) -> set[str]:
    proc = subprocess.run(argv(program, [*sub, "--help"]) if program in PYTHON_MODULES
                          else [sys.executable, program, *sub, "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", proc.stdout))


OTHER = [c for c in shell_commands() if shlex.split(c)[0] in
         ("derelayl-ledger", "derelayl-report", "mlflow", "python")
         and shlex.split(c)[:3] != ["python", "-m", "pytest"]]


@pytest.mark.parametrize("command", OTHER)
def test_every_other_commands_options_exist(command):
    words = shlex.split(command)
    program, args = words[0], words[1:]
    sub = []
    if program in ("derelayl-ledger", "mlflow"):  # subcommands: verify, show / ui, server
        sub, args = args[:1], args[1:]
    elif program == "python":  # a script
        program, args = args[0], args[1:]
        assert (ROOT / program).is_file(), program
    flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    assert flags <= help_flags(program, sub), (command, flags - help_flags(program, sub))


def test_pip_installs_name_existing_extras():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for args in commands_of("pip"):
        assert args[:2] == ["install", "-e"], args
        target = args[2]
        assert target.split("[")[0] == "."
        for extra in re.findall(r"\[([^\]]*)\]", target):
            assert extra in extras, extra


@pytest.mark.skipif(not os.environ.get("DERELAYL_TEST_INSTALL"),
                    reason="installs the package into a fresh virtual environment (and builds it "
                           "with hatchling from PyPI, so it needs the network): set "
                           "DERELAYL_TEST_INSTALL=1")
def test_the_readme_pip_installs_work_in_a_fresh_environment(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    for args in commands_of("pip"):
        proc = subprocess.run([str(venv / "bin/pip"), *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([str(venv / "bin/derelayl-train"), "--help"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and "derelayl-train" in proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_printed(program: str, args: list[str], cwd: Path, timeout: int = 600):
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    proc = subprocess.run(argv(program, args), capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, (program, args, proc.stderr[-3000:])
    return proc


def test_the_setup_run_and_one_example_of_each_cli_for_real(tmp_path):
    """In a fresh folder, as printed: the default experiment, then the README's commands that
    read it (the ledger CLI on its folder, the report on its MLflow store, mlflow ui)."""
    setup = [shlex.split(c)[1:] for c in shell_commands() if shlex.split(c)[0] == "derelayl-train"]
    assert setup[0] == [], "the README's first derelayl-train command is the default run"
    run_printed("derelayl-train", setup[0], tmp_path)
    folders = list((tmp_path / "outputs/runs").glob("*/*"))
    assert len(folders) == 1 and (folders[0] / "metrics.json").is_file()
    run_dir = folders[0].relative_to(tmp_path)

    for args in commands_of("derelayl-ledger"):  # verify / show outputs/runs/<date>/<time>-...
        args = [str(run_dir) if a.startswith("outputs/runs/<date>/<time>") else a for a in args]
        proc = run_printed("derelayl-ledger", args, tmp_path)
        assert proc.stdout.strip()

    report = next(a for a in commands_of("derelayl-report") if a == ["--experiment", "derelayl"])
    proc = run_printed("derelayl-report", report, tmp_path)
    assert "1 runs" in proc.stdout and (tmp_path / "outputs/report/derelayl/report.html").exists()

    ui = next(a for a in commands_of("mlflow") if a[:1] == ["ui"])
    port = free_port()
    server = subprocess.Popen(argv("mlflow", [*ui, "--port", str(port)]), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        body = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name" \
                      f"?experiment_name=derelayl"
                with urllib.request.urlopen(url, timeout=3) as resp:
                    body = json.loads(resp.read())
                    break
            except OSError:
                time.sleep(0.5)
        assert body is not None and body["experiment"]["name"] == "derelayl", body
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
