"""Parallel ``dvc queue`` workers on a fresh MLflow store: every worker logs its run."""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

# A tiny pipeline: 24 synthetic faces at 32 px, one epoch of a small U-Net.
TINY = {
    "sample": {"n": 24, "image_size": 64, "mask_size": 64},
    "resize": {"size": 32},
    "model": {"base_width": 4, "depth": 2},
    "train": {"epochs": 1, "batch_size": 8},
    "runtime": {"threads": 1, "n_jobs": 1},
    "export": {"latency_repeats": 1},
}


def run_queue(project, experiments: dict[str, str], jobs: int = 2, timeout: float = 600) -> None:
    """Queue each experiment (name: ``-S`` override), start ``jobs`` workers and wait until none is queued
    or running; fail with the failed tasks' logs (tests/test_team.py runs the same on PostgreSQL)."""
    for name, override in experiments.items():
        project.dvc("exp", "run", "--queue", "-n", name, "-S", override)
    project.dvc("queue", "start", "-j", str(jobs))
    status = wait_for_queue(project, timeout)
    failed = [line for line in status.splitlines() if "Failed" in line]
    logs = "\n".join(project.dvc("queue", "logs", line.split()[0], check=False).stdout for line in failed)
    assert not failed, f"{status}\n{logs[-4000:]}"


def wait_for_queue(project, timeout: float = 600) -> str:
    """`dvc queue status` once nothing is queued or running (bounded by ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        status = project.dvc("queue", "status").stdout
        if not any(state in status for state in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(3)


def test_two_queue_workers_on_a_fresh_store_both_log_complete_runs(project) -> None:
    project.set_params(**TINY)
    # The data stages once, committed: both workers then start at `train`, together, on no store at all.
    project.dvc("repro", "split")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "tiny project")
    assert not (project.root / "mlflow.db").exists()
    run_queue(project, {"seed-0": "train.seed=0", "seed-1": "train.seed=1"})

    client = MlflowClient(f"sqlite:///{project.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("eyelip")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["seed-0", "seed-1"]
    for run in runs:  # complete: trained, evaluated, its model logged
        assert run.info.status == "FINISHED"
        assert {"val_iou", "test_iou", "test_iou_native"} <= set(run.data.metrics), run.data.metrics
        assert run.data.tags["dvc_experiment"] == run.info.run_name
    assert len(client.search_model_versions("name='eyelip'")) == 2  # both exported and registered
