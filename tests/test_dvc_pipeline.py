"""`dvc repro` on a fresh git-initialised copy of the repository: every stage runs, a second
repro does nothing, and each of the DVC page's commands (docs/operations/dvc.md: a changed
param, another partitioner, metrics and plots) reruns exactly the stages that read what changed,
DeRelayL included, and leaves every run folder holding one run of the current config."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from readme import DVC_PAGE, commands_of

# what each documented `dvc exp run -S key=value` must rerun (method and seed stages expand below)
RERUNS = {
    "alpha": {"partition", "train", "report"},
    "rounds": {"train", "report"},
    "partition": {"partition", "train", "report"},
}


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def dvc(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["dvc", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(
            os.environ,
            GIT_AUTHOR_NAME="t",
            GIT_AUTHOR_EMAIL="t@t",
            GIT_COMMITTER_NAME="t",
            GIT_COMMITTER_EMAIL="t@t",
        ),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture
def repo(tmp_path):
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    dest = tmp_path / "repo"
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    # tiny: one seed, 6 participants, 2 rounds, no MLflow (DeRelayL keeps its Shapley values)
    params.update(
        seeds=[0],
        methods=["derelayl", "relay"],
        num_participants=6,
        rounds=2,
        train_overrides="algorithm.local_epochs=1 tracking=none",
    )
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "fresh clone"], cwd=dest, check=True)
    return dest


def stages(kinds: set[str], methods=("derelayl", "relay")) -> set[str]:
    out = set()
    for kind in kinds:
        if kind == "train":
            out |= {f"train@{m}-0" for m in methods}
        elif kind == "report":
            out.add("report")
        else:
            out.add(f"{kind}@0")
    return out


def run_config(repo: Path, method: str) -> dict:
    return yaml.safe_load((repo / f"outputs/dvc/train/{method}/seed0/config.yaml").read_text())


@pytest.mark.slow  # end to end through subprocesses (a minute or more): CI runs it
def test_dvc_repro_noop_and_every_readme_command(repo):
    out = dvc(repo, "repro")
    assert ran(out) == stages({"prepare", "partition", "train", "report"}), out
    for method in ("derelayl", "relay"):
        run = repo / f"outputs/dvc/train/{method}/seed0"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["rounds"] == 2 and 0 <= metrics["test_acc"] <= 1
        # the run read the materialised partition: same histograms as the partition stage wrote
        assert json.loads((run / "partition.json").read_text()) == json.loads(
            (repo / "data/partitions/seed0/partition.json").read_text()
        )
        short = json.loads((repo / f"outputs/dvc/metrics/{method}-seed0.json").read_text())
        assert short["test_acc"] == metrics["test_acc"] and len(short) <= 8
        curve = (repo / f"outputs/dvc/curves/{method}-seed0.csv").read_text().splitlines()
        assert curve[0] == "step,samples_seen,val_acc,test_acc" and len(curve) > 1
    assert run_config(repo, "relay")["algorithm"]["rounds"] == 2  # rounds reached every method
    assert (repo / "outputs/dvc/report/report.html").exists()
    assert (repo / "outputs/dvc/report/figures/accuracy_vs_rounds.png").exists()

    out = dvc(repo, "repro")
    assert ran(out) == set() and "Data and pipelines are up to date" in out

    documented = commands_of("dvc", (ROOT / DVC_PAGE).read_text())
    assert documented[0] == ["repro"] and {"metrics", "plots"} <= {c[0] for c in documented}
    for args in documented[1:]:
        out = dvc(repo, *args)
        if args[:2] == ["exp", "run"]:  # `-S key=value`: exactly the stages that read it
            key, value = args[args.index("-S") + 1].split("=", 1)
            assert ran(out) == stages(RERUNS[key]), (args, out)
            value = yaml.safe_load(value)
            for method in ("derelayl", "relay"):  # each folder holds one run of the new config
                cfg = run_config(repo, method)
                hist = (repo / f"outputs/dvc/train/{method}/seed0/history.csv").read_text()
                if key == "rounds":
                    got = (
                        cfg["derelayl"]["rounds"]
                        if method == "derelayl"
                        else cfg["algorithm"]["rounds"]
                    )
                    assert got == value
                    if method == "derelayl":
                        assert len(hist.splitlines()) == value + 1
                elif key == "alpha":
                    assert cfg["partition"]["alpha"] == value
                else:  # the option chosen, as the run folder records it
                    chosen = json.loads(
                        (repo / f"outputs/dvc/train/{method}/seed0/choices.json").read_text()
                    )
                    assert chosen["partition"] == value
        elif args[0] == "metrics":
            rows = [ln for ln in out.splitlines() if "outputs/dvc/metrics/" in ln]
            assert {ln.split()[0] for ln in rows} == {
                "outputs/dvc/metrics/derelayl-seed0.json",
                "outputs/dvc/metrics/relay-seed0.json",
            }
            assert "test_acc" in out and max(len(ln) for ln in out.splitlines()) < 160, out
        elif args[0] == "plots":
            page = (repo / "dvc_plots/index.html").read_text()
            assert "curves_derelayl-seed0_csv" in page and "curves_relay-seed0_csv" in page
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True
    ).stdout
    assert "dvc_plots" not in status, status  # DVC's scratch output is git-ignored

    # a method dropped from the study: nothing retrains, its old folder leaves the report
    out = dvc(repo, "exp", "run", "-S", "methods=[derelayl]")
    assert ran(out) == {"report"}, out
    summary = json.loads((repo / "outputs/dvc/report/summary.json").read_text())
    assert list(summary) == ["derelayl"]
