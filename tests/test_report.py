"""derelayl-report on a tiny real sweep (MLflow and run folders) and on synthetic metrics."""

import json

import pytest

from derelayl.cli.report import main as report_main
from derelayl.reporting.study import RunRecord, group_runs, mean_std_curve, run_curve, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_from_mlflow_experiment(tiny_study, tmp_path, capsys):
    out = tmp_path / "report"
    report_main(
        [
            "--experiment",
            tiny_study["experiment"],
            "--tracking-uri",
            tiny_study["uri"],
            "--out",
            str(out),
        ]
    )
    assert "4 runs" in capsys.readouterr().out
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    # grouped by method plus what differs (alpha), averaged over the two seeds
    assert "relay, partition.alpha=0.1 | 2 | 0,1 |" in md
    assert "relay, partition.alpha=1.0 | 2 | 0,1 |" in md
    for stem in ("accuracy_vs_rounds", "accuracy_vs_hops", "accuracy_vs_samples"):
        png = out / "figures" / f"{stem}.png"
        assert png.read_bytes().startswith(PNG) and png.stat().st_size > 10_000
        assert f"figures/{stem}.png" in html
    # metrics this algorithm does not log: figures and sections omitted, with a note
    assert (out / "figures" / "accuracy_vs_bytes.png").exists()  # the relay logs bytes
    assert "no run logs `bytes`" not in md and "no run logs `retention`" in md
    assert "## Fairness" in md and "## Robustness" in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["relay, partition.alpha=1.0"]["runs"] == 2
    assert 0 <= summary["relay, partition.alpha=1.0"]["test_acc"]["mean"] <= 1


def test_report_from_run_folders_matches_mlflow(tiny_study, tmp_path):
    report_main(["--runs", str(tiny_study["sweep"]), "--out", str(tmp_path / "a")])
    report_main(
        [
            "--experiment",
            tiny_study["experiment"],
            "--tracking-uri",
            tiny_study["uri"],
            "--out",
            str(tmp_path / "b"),
        ]
    )
    a = json.loads((tmp_path / "a/summary.json").read_text())
    b = json.loads((tmp_path / "b/summary.json").read_text())
    assert a.keys() == b.keys()
    for group in a:
        assert abs(a[group]["test_acc"]["mean"] - b[group]["test_acc"]["mean"]) < 1e-9


def test_report_bad_input_is_one_line(tiny_study, tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        report_main(["--experiment", "nope", "--tracking-uri", tiny_study["uri"]])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no MLflow experiment 'nope'" in err[0] and "tiny-study" in err[0]


def _synthetic(method, seed, incentive, shift):
    rounds = range(1, 6)
    series = {
        "test_acc": {r: 0.1 * r + shift for r in rounds},
        "samples_seen": {r: 100.0 * r for r in rounds},
        "bytes": {r: 1e6 * r * (1 + seed) for r in rounds},
        "sim_time_s": {r: 3.0 * r for r in rounds},
        "retention": {r: 1 - 0.05 * r * (1 + shift) for r in rounds},
    }
    final = {
        "test_acc": 0.5 + shift,
        "coins_gini": 0.3 + shift,
        "coins_shapley_spearman": 0.7,
        "adversary_coin_share": 0.05 + shift / 10,
    }
    return RunRecord(
        f"{method}-{incentive}-{seed}",
        "x",
        {"algorithm": method, "seed": str(seed), "incentive": incentive},
        {"seed": str(seed), "algorithm.name": method},
        final,
        series,
        "round",
    )


def test_report_sections_appear_when_their_metrics_exist(tmp_path):
    runs = [
        _synthetic("derelayl", s, inc, shift)
        for s in (0, 1, 2)
        for inc, shift in (("derelayl", 0.1), ("none", 0.0))
    ]
    groups = group_runs(runs)
    assert set(groups) == {"derelayl, incentive=derelayl", "derelayl, incentive=none"}
    report = write_report(runs, tmp_path, title="synthetic", source="test")
    names = {p.name for p in report.figures}
    assert {
        "accuracy_vs_rounds.png",
        "accuracy_vs_bytes.png",
        "accuracy_vs_sim_time.png",
        "accuracy_vs_samples.png",
        "sustainability_retention.png",
        "fairness.png",
        "robustness.png",
    } <= names
    assert "accuracy_vs_hops.png" not in names  # round-level runs have no hop axis
    assert not any("omitted" in n for n in report.notes)


def test_mean_std_interpolates_different_x():
    import numpy as np

    a = (np.array([0.0, 10.0]), np.array([0.0, 1.0]))
    b = (np.array([0.0, 5.0, 20.0]), np.array([0.0, 1.0, 1.0]))
    grid, mean, std = mean_std_curve([a, b], points=11)
    assert grid[0] == 0 and grid[-1] == 10  # the common range
    assert np.isclose(mean[5], (0.5 + 1.0) / 2) and np.isclose(std[0], 0)
    run = RunRecord(
        "r",
        "r",
        {},
        {},
        {},
        {"test_acc": {1: 0.2, 2: 0.4, 3: 0.6, 4: 0.8}, "round": {1: 1, 2: 1, 3: 2, 4: 2}},
        "hop",
    )
    x, y = run_curve(run, "round")
    assert list(x) == [1, 2] and list(y) == [0.4, 0.8]  # the last hop of each round


def test_a_report_keeps_one_run_per_config_and_seed_the_latest(tmp_path):
    """A standalone seed-0 run and a sweep's seeds 0 and 1 are 2 seeds, not 3 runs: the latest
    finished run of each (config, seed) counts; a different config stays a group of its own."""

    def run(seed, acc, at, lr="0.02"):
        params = {
            "seed": str(seed),
            "algorithm.name": "relay",
            "algorithm.optimizer.lr": lr,
            "tracking.parent_run_id": f"p{at}",
        }
        return RunRecord(
            f"r{seed}-{at}",
            "x",
            {"algorithm": "relay", "seed": str(seed)},
            params,
            {"test_acc": acc},
            {},
            "hop",
            finished_at=float(at),
        )

    runs = [run(0, 0.50, at=1), run(0, 0.70, at=3), run(1, 0.90, at=2), run(0, 0.10, 4, "0.5")]
    report = write_report(runs, tmp_path, title="t", source="test")
    summary = json.loads((tmp_path / "summary.json").read_text())
    same = summary["relay, algorithm.optimizer.lr=0.02"]
    assert same["runs"] == 2 and same["seeds"] == "0,1"
    assert same["test_acc"]["mean"] == pytest.approx(0.80)  # the latest seed-0 run (0.70)
    assert summary["relay, algorithm.optimizer.lr=0.5"]["runs"] == 1
    assert "1 repeated run of the same config and seed left out" in report.markdown.read_text()
    assert any("repeated run" in n for n in report.notes)


def test_report_std_is_the_sample_std(tmp_path):
    """One convention everywhere (report, README): the sample std, ddof = 1."""
    import statistics

    accs = [0.94, 0.87, 0.92]
    runs = [
        RunRecord(
            f"r{s}",
            "x",
            {"algorithm": "derelayl", "seed": str(s)},
            {"seed": str(s)},
            {"test_acc": a},
            {},
            "round",
            finished_at=s,
        )
        for s, a in enumerate(accs)
    ]
    write_report(runs, tmp_path, title="t", source="test")
    got = json.loads((tmp_path / "summary.json").read_text())["derelayl"]["test_acc"]
    assert got["std"] == pytest.approx(statistics.stdev(accs))
    # one run: no spread (not a std of 0)
    write_report(runs[:1], tmp_path / "one", title="t", source="test")
    one = json.loads((tmp_path / "one/summary.json").read_text())["derelayl"]["test_acc"]
    assert one == {"mean": 0.94, "std": None}
    assert "| 0.9400 |" in (tmp_path / "one/report.md").read_text()
