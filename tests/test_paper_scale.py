"""``experiment=paper_scale`` (issue 13): the authors' N = 256 with real training.

The preset composes to what the docs say (MNIST-1D sized for ~150 samples a participant, the CNN,
trained DeRelayL for 100 rounds, batched hops); shrunk, it runs end to end through the CLI; with
``dataset=cifar10`` it takes CIFAR-10's sizes and, without the files, is refused in one line
with nothing written. The full run's wall time and accuracy are measured by
``benchmarks/paper_scale.py`` (no timing asserts here).
"""

from __future__ import annotations

import json

from omegaconf import OmegaConf
from tests.conftest import assert_one_line_error


def _job(make_cfg, *overrides: str) -> dict:
    return OmegaConf.to_container(make_cfg("experiment=paper_scale", *overrides), resolve=True)


def test_preset_is_the_authors_n_with_real_training(make_cfg):
    cfg = _job(make_cfg)
    assert cfg["num_participants"] == 256
    assert cfg["algorithm"]["runner"]["_target_"].endswith(".DeRelayL")
    assert cfg["model"]["net"]["_target_"].endswith(".CNN")
    assert cfg["derelayl"]["performance"] == "trained" and cfg["derelayl"]["rounds"] == 100
    assert cfg["algorithm"]["execution"] == "batched" and cfg["algorithm"]["local_steps"] == 30
    assert cfg["shapley"]["enabled"] is False
    assert cfg["tracking"]["experiment"] == "paper_scale"
    ds = cfg["dataset"]
    assert ds["_target_"].endswith(".mnist1d")
    train = round(ds["num_samples"] * (1 - ds["val_fraction"] - ds["test_fraction"]))
    assert 145 <= train / cfg["num_participants"] <= 160  # ~150 samples a participant
    # every protocol constant stays the authors': only the length and checkpoints differ
    ours = cfg["derelayl"]
    default = OmegaConf.to_container(make_cfg("algorithm=derelayl"), resolve=True)["derelayl"]
    assert {k for k in default if ours[k] != default[k]} == {"rounds", "checkpoint_every"}


def test_preset_composes_on_the_command_line(cli):
    proc = cli("experiment=paper_scale", "--cfg=job", "--resolve")
    assert proc.returncode == 0, proc.stderr
    job = OmegaConf.create(proc.stdout)
    assert job.num_participants == 256 and job.dataset.num_samples == 43000
    assert job.model.net._target_.endswith(".CNN") and job.derelayl.rounds == 100


def test_cifar10_variant_takes_cifar10_sizes_not_mnist1d_keys(make_cfg):
    ds = _job(make_cfg, "dataset=cifar10")["dataset"]
    assert ds["_target_"].endswith(".cifar10") and ds["download"] is False
    assert ds["max_train_samples"] == 150 * 256 and ds["val_fraction"] == 0.05
    assert "num_samples" not in ds and "test_fraction" not in ds  # MNIST-1D's, not CIFAR-10's
    # the specialisation is the preset's only: plain dataset=mnist1d keeps its defaults
    plain = OmegaConf.to_container(make_cfg("dataset=mnist1d"), resolve=True)["dataset"]
    assert plain["num_samples"] == 5000 and plain["val_fraction"] == 0.15


def test_shrunk_preset_runs_end_to_end(cli, tmp_path):
    run = tmp_path / "run"
    proc = cli(
        "experiment=paper_scale",
        "num_participants=16",
        "derelayl.rounds=3",
        "dataset.num_samples=2000",
        "algorithm.local_steps=3",
        "progress_every=1",
        "tracking=none",
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["rounds"] == 3 and metrics["hops"] > 0
    assert 0.0 <= metrics["test_acc"] <= 1.0 and 0.0 <= metrics["val_acc"] <= 1.0
    assert (run / "coins_per_participant.png").is_file() and (run / "version_shares.png").is_file()


def test_cifar10_without_its_files_is_refused_and_writes_nothing(cli, tmp_path):
    (tmp_path / "data").mkdir()  # data_dir (conftest) exists but holds no CIFAR-10 files
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = cli("experiment=paper_scale", "dataset=cifar10", f"hydra.run.dir={tmp_path}/run")
    assert_one_line_error(proc.returncode, proc.stderr, "dataset=cifar10: files not found")
    assert "dataset.download=true" in proc.stderr.strip().splitlines()[-1]
    # no run folder, no MLflow store (tracking is on: the default mlflow, into tmp_path)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
