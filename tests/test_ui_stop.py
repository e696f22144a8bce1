"""`eyelip ui` prints its URL only once the server answers, and stopped by its PID (SIGTERM) or Ctrl+C
(SIGINT) takes the MLflow server down with it."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import BIN
from mlflow import MlflowClient
from servers import free_port, ui_url


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui")
    MlflowClient(f"sqlite:///{root / 'mlflow.db'}").search_experiments()  # creates and migrates the store
    return root


@pytest.mark.slow  # an MLflow server start per signal: ~30-50 s each on 2 busy cores
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_eyelip_ui_stops_the_server(store: Path, tmp_path: Path, signum: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    port = free_port()
    with (tmp_path / "ui.log").open("w") as log:
        proc = subprocess.Popen(
            [str(BIN / "eyelip"), "ui", "--port", str(port)],
            cwd=store,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        url = ui_url(proc, tmp_path / "ui.log")
        assert url == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:  # answers at once: no waiting
            assert response.status == 200
        server = psutil.Process(proc.pid).children(recursive=True)
        assert server, "no mlflow server process under eyelip ui"
        os.kill(proc.pid, signum)  # to eyelip alone, as `kill PID` does
        assert proc.wait(timeout=30) == 0, (tmp_path / "ui.log").read_text()[-3000:]
        _, alive = psutil.wait_procs(server, timeout=10)
        assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
