"""The team-server set-up of the README (``tracking=server``): an MLflow server with
authentication (``--app-name basic-auth``) on loopback. Wrong credentials end a run with one line
before it writes anything; the right ones track it, anchor its ledger, and let verify check it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import assert_one_line_error, tmp_overrides

ADMIN_PASSWORD = "test-admin-password-1"  # MLflow 3 requires 12+ characters
RUN = (
    "tracking=server",
    "derelayl.performance=random_walk",
    "num_participants=16",
    "derelayl.rounds=3",
)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
        MLFLOW_FLASK_SERVER_SECRET_KEY="test-secret-key",
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            f"sqlite:///{tmp}/store.db",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--allowed-hosts",
            f"127.0.0.1:{port},127.0.0.1",
        ],
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"mlflow server did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
    yield uri
    server.terminate()
    server.wait(timeout=30)


def _train(tmp: Path, uri: str, run_dir: Path, password: str | None):
    env = dict(os.environ, HYDRA_FULL_ERROR="0", MLFLOW_TRACKING_USERNAME="admin")
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    if password is not None:
        env["MLFLOW_TRACKING_PASSWORD"] = password
    overrides = [o for o in tmp_overrides(tmp) if not o.startswith("tracking.")]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "derelayl.cli.train",
            *overrides,
            *RUN,
            f"tracking.uri={uri}",
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize("password", [None, "wrong-password"])
def test_a_run_without_valid_credentials_is_refused_before_it_writes(
    auth_server, tmp_path, password
):
    proc = _train(tmp_path, auth_server, tmp_path / "run", password)
    assert_one_line_error(
        proc.returncode, proc.stderr, "refused the request (HTTP 401: not authenticated)"
    )
    assert not (tmp_path / "run").exists()


def test_an_authenticated_run_is_tracked_and_anchored(auth_server, tmp_path):
    proc = _train(tmp_path, auth_server, tmp_path / "run", ADMIN_PASSWORD)
    assert proc.returncode == 0, proc.stderr
    env = dict(
        os.environ, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD
    )
    verify = subprocess.run(
        [sys.executable, "-m", "derelayl.cli.ledger", "verify", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "checked against its anchor in MLflow" in verify.stdout
