"""The MLflow UI shows a sweep's runs and a metric chart: `mlflow server` on loopback, headless
Chromium (Debian's; .ci/run installs it), a screenshot kept under outputs/test-artifacts/."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT

ARTIFACTS = ROOT / "outputs" / "test-artifacts"
CHROMIUM = next(
    (
        p
        for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
        if p and Path(p).exists()
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium; .ci/run does it)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tiny_study, tmp_path):
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tiny_study["uri"],
        "--default-artifact-root",
        str(tiny_study["artifacts"]),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # its own process group: the server's workers go down with it
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "mlflow server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:]
                )
            time.sleep(0.3)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        log.close()


def chromium(url: str, *args: str, timeout: int = 90) -> str:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
            "--virtual-time-budget=15000",
            *args,
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def visible_text(dom: str) -> str:
    text = re.sub(r"<script.*?</script>|<style.*?</style>|<!--.*?-->", "", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


@pytest.mark.slow  # end to end through subprocesses (a minute or more): CI runs it
def test_mlflow_ui_shows_sweep_runs_and_a_metric_chart(tiny_study, mlflow_server):
    client = MlflowClient(tracking_uri=mlflow_server)  # the server serves the sweep's store
    exp = client.get_experiment_by_name(tiny_study["experiment"])
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("derelayl.sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}

    # the runs table: the sweep's parent row, named by what the sweep varies, and all five runs
    dom = chromium(f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs", "--dump-dom")
    assert parents[0].info.run_name == "sweep: seed=0,1 x partition.alpha=0.1,1.0 (4 jobs)"
    assert parents[0].info.run_name in visible_text(dom), visible_text(dom)[:3000]
    assert "5 matching runs" in visible_text(dom), visible_text(dom)[:3000]

    # a metric chart (plotly) of two child runs' test accuracy
    shown = children[:2]
    ids = json.dumps([r.info.run_id for r in shown], separators=(",", ":"))
    chart = (
        f"{mlflow_server}/#/metric?runs={ids}&metric=%22test_acc%22"
        f"&experiments=[%22{exp.experiment_id}%22]&plot_metric_keys=[%22test_acc%22]"
    )
    dom = chromium(chart, "--dump-dom")
    assert "scatterlayer" in dom and dom.count('class="trace scatter') >= 2, dom[-3000:]
    for run in shown:  # the chart's legend names each run by what it is, not a random name
        assert run.info.run_name.startswith("relay dirichlet(") and "seed=" in run.info.run_name
        assert run.info.run_name in visible_text(dom)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "mlflow_ui_test_acc.png"
    shot.unlink(missing_ok=True)
    chromium(chart, "--run-all-compositor-stages-before-draw", f"--screenshot={shot}")
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
