"""`dvc repro` on a fresh git-initialised copy of the repository: every stage runs, a second
repro does nothing, and changing one param reruns only the stages that depend on it."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT



def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def dvc(repo: Path, *args: str) -> str:
    proc = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
                                   GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture
def repo(tmp_path):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    dest = tmp_path / "repo"
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params.update(seeds=[0], methods=["relay"], num_participants=5,
                  train_overrides="algorithm.rounds=1")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "fresh clone"], cwd=dest, check=True)
    return dest


def test_dvc_repro_noop_and_partial_rerun(repo):
    out = dvc(repo, "repro")
    assert ran(out) == {"prepare@0", "partition@0", "train@relay-0", "report"}, out
    run = repo / "outputs/dvc/train/relay/seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["hops"] == 5 and 0 <= metrics["test_acc"] <= 1
    # the run read the materialised partition: same histograms as the partition stage wrote
    assert json.loads((run / "partition.json").read_text()) == \
        json.loads((repo / "data/partitions/seed0/partition.json").read_text())
    assert (repo / "outputs/dvc/report/report.html").exists()
    assert (repo / "outputs/dvc/report/figures/accuracy_vs_rounds.png").exists()

    out = dvc(repo, "repro")
    assert ran(out) == set() and "Data and pipelines are up to date" in out

    # a partition knob: the split stays, partition/train/report rerun (as a DVC experiment)
    out = dvc(repo, "exp", "run", "-S", "alpha=1.0")
    assert ran(out) == {"partition@0", "train@relay-0", "report"}, out
    manifest = json.loads((repo / "data/partitions/seed0/manifest.json").read_text())
    assert manifest["partition"]["alpha"] == 1.0

    shown = dvc(repo, "metrics", "show")
    assert "outputs/dvc/train/relay/seed0/metrics.json" in shown and "test_acc" in shown
