"""MLflow's records say what happened, in a real store with real processes: a run's status says how its
stage ended (Ctrl+C or SIGTERM mid-training -> KILLED with the epochs done so far logged; an error ->
FAILED), and a DVC experiment that trains nothing adds no run and no model version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Project
from mlflow.tracking import MlflowClient
from test_train import FAST as TRAIN_FAST

from eyelip.tracking.report import champion_line
from eyelip.tracking.results import load_runs

# test_train's fast recipe, with epochs enough that a signal always lands mid-training.
FAST = {**TRAIN_FAST, "train": {**TRAIN_FAST["train"], "epochs": 50}}


def epochs_logged(project: Project, run_id: str) -> list[int]:
    client = MlflowClient(f"sqlite:///{project.root / 'mlflow.db'}")
    return [m.step for m in client.get_metric_history(run_id, "val_iou")]


def interrupt_training(project: Project, signum: int, epochs: int) -> tuple[subprocess.CompletedProcess, str]:
    """Start the train stage, wait until ``epochs`` more epochs are in the store, then send ``signum``;
    returns the finished process and the MLflow run id of models/run.json."""
    run_file = project.root / "models" / "run.json"
    run_id = lambda: json.loads(run_file.read_text())["run_id"]  # noqa: E731
    before = len(epochs_logged(project, run_id())) if run_file.exists() else 0
    proc = subprocess.Popen(
        [sys.executable, "pipeline/train.py"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    # run.json appears when the run starts (the store exists by then: it is not opened from here before).
    while proc.poll() is None and time.monotonic() < deadline:
        if run_file.exists() and len(epochs_logged(project, run_id())) >= before + epochs:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "training ended before it was interrupted:\n" + proc.communicate()[1]
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), run_id()


def test_interrupted_training_is_killed_in_mlflow_with_its_epochs_logged(
    project: Project, synthetic: Path, monkeypatch
) -> None:
    project.set_params(data={"root": str(synthetic)}, **FAST)
    project.dvc("repro", "split")
    stopped, run_id = interrupt_training(project, signal.SIGINT, 1)  # Ctrl+C
    assert stopped.returncode == 130, stopped.stderr
    assert stopped.stderr.strip().endswith("eyelip train: interrupted; no partial output was kept")
    client = MlflowClient(f"sqlite:///{project.root / 'mlflow.db'}")
    run = client.get_run(run_id)
    steps = epochs_logged(project, run_id)
    assert run.info.status == "KILLED" and run.info.end_time
    assert steps == list(range(1, len(steps) + 1)) and steps, steps  # every completed epoch, in order

    # SIGTERM (kill, a queue worker stopped) on the resumed training: the same run, KILLED again.
    stopped, again = interrupt_training(project, signal.SIGTERM, 1)
    assert stopped.returncode == 143, stopped.stderr
    assert "resuming from models/resume.pt" in stopped.stdout
    assert stopped.stderr.strip().endswith("eyelip train: stopped (SIGTERM); no partial output was kept")
    more = epochs_logged(project, run_id)
    assert again == run_id and client.get_run(run_id).info.status == "KILLED"
    assert more == list(range(1, len(more) + 1)) and len(more) > len(steps), (steps, more)

    # `eyelip results` leaves the run out; `eyelip report` warns that it did not finish.
    monkeypatch.chdir(project.root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert load_runs("eyelip") == []
    line = champion_line(project.root, "eyelip")
    assert line and line.startswith(f"**warning**: MLflow run `{run.info.run_name}` (models/run.json) is KILLED")


CRASH = """
import sys
from eyelip import stage
from eyelip.errors import EyelipError
from eyelip.params.core import View
from eyelip.params.runtime import RuntimeParams
from eyelip.params.tracking import TrackingParams
from eyelip.tracking.store import start_run

class Params(View):
    tracking: TrackingParams = TrackingParams(experiment="crashes")
    runtime: RuntimeParams = RuntimeParams()

def body(params):
    run = start_run(params)
    print(run.info.run_id, flush=True)
    raise EyelipError("bad value") if sys.argv[1] == "error" else RuntimeError("a bug")

stage.run("crash", body, Params)
"""


@pytest.mark.parametrize(
    ("how", "code", "said"), [("error", 1, "eyelip crash: error: bad value"), ("bug", 1, "RuntimeError: a bug")]
)
def test_a_stage_that_fails_leaves_its_run_failed(tmp_path: Path, how: str, code: int, said: str, capsys) -> None:
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n")
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, how],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "DVC_ROOT": str(tmp_path)},
        timeout=300,
    )
    assert proc.returncode == code and said in proc.stderr, proc.stderr
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = MlflowClient(store).get_run(proc.stdout.split()[-1])
    assert run.info.status == "FAILED"
    # `eyelip results` lists finished runs only, and names the ones it leaves out.
    assert load_runs("crashes", store) == []
    assert f"left out, as they did not finish: {run.info.run_name} (FAILED)" in capsys.readouterr().out


def test_an_experiment_that_trains_nothing_adds_no_run_and_no_version(project: Project, synthetic: Path) -> None:
    """`dvc exp run -S export.*`: the train stage is cached, so the model and its run are the baseline's."""
    project.set_params(
        data={"root": str(synthetic)},
        **{**FAST, "train": {**FAST["train"], "epochs": 1}, "export": {"latency_repeats": 1}},
    )
    project.dvc("repro", "export")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline")
    client = MlflowClient(f"sqlite:///{project.root / 'mlflow.db'}")
    (trained,) = client.search_runs([client.get_experiment_by_name("eyelip").experiment_id])

    out = project.dvc("exp", "run", "-S", "export.latency_repeats=2", "-n", "repeats-2").stdout
    assert (
        f"experiment 'repeats-2' trained no model: its model is the one MLflow run '{trained.info.run_name}' "
        f"({trained.info.run_id}) trained"
    ) in out
    assert "registry 'eyelip': v1 already holds this model" in out and "v1 stays champion" in out
    assert [r.info.run_id for r in client.search_runs([trained.info.experiment_id])] == [trained.info.run_id]
    (version,) = client.search_model_versions("name = 'eyelip'")
    assert version.run_id == trained.info.run_id
    assert client.get_registered_model("eyelip").aliases == {"champion": 1, "candidate": 1}
