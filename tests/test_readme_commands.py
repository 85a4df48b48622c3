"""Every command printed in README.md and in the documentation pages works as printed.

- every ``derelayl-train`` command composes (``--cfg job``; a ``-m`` sweep: each of its jobs);
- every other program's options exist (``<command> --help``: derelayl-ledger, derelayl-report,
  mlflow, mkdocs, ray, pytest, the benchmarks and scripts), ``python -c`` code compiles and its
  imports exist, ``pip install -e`` names extras that pyproject.toml has and other ``pip
  install`` names only the project's dependencies; programs that administer another machine
  (sudo, ...) are listed as such, so a new program must be classified here;
- the README's set-up commands and one example of each CLI run for real, in a fresh folder: the
  default ``derelayl-train``, ``mlflow ui``, ``derelayl-ledger verify`` / ``show`` on that run,
  and ``derelayl-report --experiment derelayl`` on its MLflow store. The DVC page's ``dvc``
  commands run for real in tests/test_dvc_pipeline.py (every page's ``dvc`` command is one of
  them). ``pip install`` runs only when asked to (see below), and ``python -m pytest`` is this
  suite.
"""

import ast
import functools
import importlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT
from readme import DVC_PAGE, all_commands, commands_of, page_commands, shell_commands

PYTHON_MODULES = {
    "derelayl-train": "derelayl.cli.train",
    "derelayl-ledger": "derelayl.cli.ledger",
    "derelayl-report": "derelayl.cli.report",
    "derelayl-prepare": "derelayl.cli.prepare",
    "derelayl-partition": "derelayl.cli.partition",
    "mlflow": "mlflow",
    "mkdocs": "mkdocs",
}
# programs whose commands this file (or tests/test_dvc_pipeline.py, for dvc) checks
CHECKED = {
    "derelayl-train",
    "derelayl-ledger",
    "derelayl-report",
    "derelayl-prepare",
    "derelayl-partition",
    "mlflow",
    "mkdocs",
    "ray",
    "pip",
    "python",
    "dvc",
    "bash",
    "ruff",
    "mypy",
    "pre-commit",
}
# shell builtins that only set the environment or the folder of the commands that follow them
BUILTINS = {"export", "cd", "source"}
# system administration on the machine being set up (a database server, a cluster node): these
# install or change system services, so they are printed for the reader and not run here
FOREIGN = {"sudo", "apt-get"}
# subcommands: the first word after the program selects the options that exist
SUBCOMMANDS = {"derelayl-ledger", "mlflow", "mkdocs", "ray", "ruff", "pre-commit"}
# programs on the PATH that an extra installs: [ray] and [dev] (CI installs both)
INSTALLED = {"ray": "ray", "ruff": "dev", "mypy": "dev", "pre-commit": "dev"}

COMMANDS = all_commands()


def words(command: str) -> list[str]:
    return shlex.split(command)


def of(*programs: str) -> list[tuple[str, str]]:
    return [(page, c) for page, c in COMMANDS if words(c)[0] in programs]


def ids(pairs) -> list[str]:
    return [f"{page}: {c}"[:180] for page, c in pairs]


def argv(program: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", PYTHON_MODULES[program], *args]


def test_the_readme_has_the_setup_and_a_tour_and_every_program_is_classified():
    readme = shell_commands()
    assert commands_of("pip")[:2] == [["install", "-e", "."], ["install", "-e", ".[test]"]], (
        "the README's two set-up commands come first"
    )
    assert commands_of("derelayl-train")[0] == [], "the README's first run is the default"
    assert len(readme) > 10 and len(COMMANDS) > 80
    programs = {words(c)[0] for _, c in COMMANDS}
    assert programs <= CHECKED | BUILTINS | FOREIGN, programs - CHECKED - BUILTINS - FOREIGN


def test_every_dvc_command_is_one_the_dvc_test_runs():
    ran = set(page_commands(DVC_PAGE))
    assert any(words(c)[:2] == ["dvc", "repro"] for c in ran)
    assert {c for _, c in of("dvc")} <= ran


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
        out += [first[:i] + [v] + first[i + 1 :] for v in values[1:]]
    return out


def without_cfg(args: list[str]) -> list[str]:
    """The command's overrides without its own ``--cfg job`` (the test adds ``--cfg=job``)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("--cfg", "-c"):
            skip = True
        elif not a.startswith("--cfg="):
            out.append(a)
    return out


@pytest.mark.parametrize("page,command", of("derelayl-train"), ids=ids(of("derelayl-train")))
def test_every_derelayl_train_command_composes(page, command, cli_in_process):
    args = words(command)[1:]
    if "--help" in args:
        code, out, err = cli_in_process(*args)
        assert code == 0 and "== Config groups" in out, err[-2000:]
        return
    for job in jobs(without_cfg(args)):
        code, out, err = cli_in_process(*job, "--cfg=job")
        assert code == 0 and "Traceback" not in err, (job, err[-2000:])
        assert "algorithm:" in out and "seed:" in out, out[:500]


@functools.cache
def help_flags(program: tuple[str, ...]) -> frozenset[str]:
    """The ``--options`` that ``<program> --help`` names (``program``: the words before it)."""
    head, rest = program[0], list(program[1:])
    if head in PYTHON_MODULES:
        cmd = argv(head, [*rest, "--help"])
    elif head in INSTALLED:
        cmd = [shutil.which(head), *rest, "--help"]
    elif head in ("pytest", "pip", "venv"):
        cmd = [sys.executable, "-m", head, *rest, "--help"]
    else:  # a script of the checkout
        cmd = [sys.executable, head, *rest, "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", proc.stdout))


def flags_of(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


OTHER = of(
    "derelayl-ledger",
    "derelayl-report",
    "derelayl-prepare",
    "derelayl-partition",
    "mlflow",
    "mkdocs",
    "ray",
    "python",
    "bash",
    "ruff",
    "mypy",
    "pre-commit",
)


@pytest.mark.parametrize("page,command", OTHER, ids=ids(OTHER))
def test_every_other_commands_options_exist(page, command):
    program, *args = words(command)
    if program == "bash":  # a script of the checkout
        assert (ROOT / args[0]).is_file(), args[0]
        return
    if program in INSTALLED and shutil.which(program) is None:
        pytest.skip(
            f"{program} is not installed (the [{INSTALLED[program]}] extra; CI installs it)"
        )
    if program == "python":
        if args[0] == "-c":  # code: it compiles, and what it imports exists
            tree = ast.parse(args[1])
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    module = importlib.import_module(node.module)
                    for alias in node.names:
                        assert hasattr(module, alias.name), (node.module, alias.name)
            return
        if args[0] == "-m":  # a module: pytest, venv, derelayl.cli.*
            module, args = args[1], args[2:]
            program = {v: k for k, v in PYTHON_MODULES.items()}.get(module, module)
        else:  # a script
            program, args = args[0], args[1:]
            assert (ROOT / program).is_file(), program
    sub: list[str] = []
    if program in SUBCOMMANDS:  # verify, show / ui, server / build, serve / start
        sub, args = args[:1], args[1:]
    if program == "venv":  # python -m venv DIR: no options used
        assert not flags_of(args), args
        return
    wanted = flags_of(args)
    assert wanted <= help_flags((program, *sub)), (command, wanted - help_flags((program, *sub)))


def project_requirements() -> tuple[dict, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    return project["optional-dependencies"], names


PIP = of("pip")


@pytest.mark.parametrize("page,command", PIP, ids=ids(PIP))
def test_pip_commands_name_existing_extras_and_the_projects_dependencies(page, command):
    extras, dependencies = project_requirements()
    args = words(command)[1:]
    if args[:2] == ["install", "-e"]:
        target = args[2]
        assert target.split("[")[0] == "."
        for extra in re.findall(r"\[([^\]]*)\]", target):
            assert set(extra.split(",")) <= set(extras), extra
        return
    sub, rest = args[0], args[1:]
    assert sub in ("install", "wheel"), args
    assert flags_of(rest) <= help_flags(("pip", sub)), command
    values = {"--index-url", "--extra-index-url", "-w", "--wheel-dir", "-r"}
    packages = [
        a
        for i, a in enumerate(rest)
        if not a.startswith("-") and (i == 0 or rest[i - 1] not in values)
    ]
    if sub == "wheel":
        assert packages == ["."], packages
    else:  # e.g. PyTorch's CPU wheels: only what the project itself depends on
        assert packages and {p.lower() for p in packages} <= dependencies, packages


@pytest.mark.skipif(
    not os.environ.get("DERELAYL_TEST_INSTALL"),
    reason="installs the package into a fresh virtual environment (and builds it "
    "with hatchling from PyPI, so it needs the network): set "
    "DERELAYL_TEST_INSTALL=1",
)
def test_the_readme_pip_installs_work_in_a_fresh_environment(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    for args in commands_of("pip"):
        if args[:2] != ["install", "-e"]:  # PyTorch's CPU index: a download of its own
            continue
        proc = subprocess.run(
            [str(venv / "bin/pip"), *args], cwd=ROOT, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run(
        [str(venv / "bin/derelayl-train"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "derelayl-train" in proc.stdout


def test_the_help_names_every_algorithm_and_its_examples_compose(cli_in_process):
    """``derelayl-train --help`` stays current: it names every ``algorithm=`` option, and every
    example it prints composes."""
    import yaml

    help_cfg = yaml.safe_load((ROOT / "conf/hydra/help/derelayl.yaml").read_text())
    text = help_cfg["header"] + help_cfg["footer"]
    for option in sorted(p.stem for p in (ROOT / "conf/algorithm").glob("*.yaml")):
        assert re.search(rf"\b{option}\b", text), f"--help does not name algorithm={option}"
    examples = [
        ln.split("#")[0].split()[1:]
        for ln in help_cfg["footer"].splitlines()
        if ln.strip().startswith("derelayl-train")
    ]
    assert len(examples) >= 5
    for args in examples:
        for job in jobs(args):
            code, out, err = cli_in_process(*job, "--cfg=job")
            assert code == 0 and "algorithm:" in out, (job, err[-2000:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_printed(program: str, args: list[str], cwd: Path, timeout: int = 600):
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    proc = subprocess.run(
        argv(program, args), capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
    assert proc.returncode == 0, (program, args, proc.stderr[-3000:])
    return proc


@pytest.mark.slow  # end to end through subprocesses (a minute or more): CI runs it
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
    server = subprocess.Popen(
        argv("mlflow", [*ui, "--port", str(port)]),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        body = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                url = (
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name"
                    f"?experiment_name=derelayl"
                )
                with urllib.request.urlopen(url, timeout=3) as resp:
                    body = json.loads(resp.read())
                    break
            except OSError:
                time.sleep(0.5)
        assert body is not None and body["experiment"]["name"] == "derelayl", body
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
