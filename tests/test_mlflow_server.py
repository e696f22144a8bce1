"""Training against a real `mlflow server` (SQLite backend store, served artifacts) on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, Project
from mlflow.tracking import MlflowClient
from servers import free_port, wait_until_answers

TINY = {
    "sample": {"n": 40, "image_size": 64, "mask_size": 64},
    "resize": {"size": 64},
    "model": {"base_width": 8, "depth": 3},
    "train": {"epochs": 2, "batch_size": 32},
    "runtime": {"threads": 2},
}


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A tracking server on a free loopback port; yields its URL and its artifact root."""
    port, artifacts = free_port(), tmp_path / "server-artifacts"
    log = open(tmp_path / "server.log", "w")
    # Its own session, so teardown stops the server and the workers it forks, and nothing else.
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(artifacts),
            "--serve-artifacts",
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/health", proc, tmp_path / "server.log")
        yield url, artifacts
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_training_logs_to_a_tracking_server(project: Project, mlflow_server: tuple[str, Path], tmp_path: Path) -> None:
    url, artifacts = mlflow_server
    project.env["MLFLOW_TRACKING_URI"] = url
    project.set_params(**TINY)
    project.dvc("repro", "train")
    assert not (project.root / "mlflow.db").exists(), "nothing goes to the local store"

    client = MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name("eyelip").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_iou")] == [1, 2]
    assert run.data.params["resize.size"] == "64"
    # Artifacts go through the server (proxied) into its artifact root, not to the client's disk.
    downloaded = client.download_artifacts(run.info.run_id, "train_history.csv", str(tmp_path))
    assert Path(downloaded).read_text().startswith("epoch")
    assert any(p.name == "train_history.csv" for p in artifacts.rglob("*"))
