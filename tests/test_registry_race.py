"""Publishers racing: several exports register versions of one model at once, each in its own process,
against one real MLflow store (a SQLite file, and an `mlflow server` on loopback). Whatever order
they finish in, no version is lost and exactly one version is `champion`: the best on the test data.

:func:`race` takes any tracking URI, so a test against another backend (PostgreSQL) can call it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from test_mlflow_server import mlflow_server  # noqa: F401  (the fixture)
from test_registry import ONE, _grey_png, onnx_model

from eyelip.inference.predictors import OnnxPredictor
from eyelip.release.pyfunc import log_pyfunc
from eyelip.release.registry import Lineage

# One publisher process: imports once, then for each race waits for its start file, sleeps its delay
# and registers the model with its test IoU.
PUBLISHER = """
import json, sys, time
from pathlib import Path
from eyelip.release.registry import Lineage, register
model_uri, lineage = sys.argv[1], Lineage.from_tags(json.loads(sys.argv[2]))
def never(name, version):
    raise AssertionError("all versions share one test split: nothing is re-scored")
print("ready", flush=True)
for start, name, delay, iou in json.loads(sys.argv[3]):
    while not Path(start).exists():
        time.sleep(0.005)
    time.sleep(delay)
    decision = register(lambda: model_uri, name, iou, lineage, never)
    print("RESULT " + json.dumps({"version": decision.version, "champion": decision.champion}), flush=True)
"""


def races(
    uri: str, model_uri: str, lineage: Lineage, ious: list[float], orders: dict[str, list[float]], workdir: Path
) -> dict[str, tuple[dict[int, float], int, str]]:
    """For each order (name -> one delay per publisher), one publisher process per IoU registers under
    ``race-<order>``, all released together, each after its delay. Returns, per order, the versions'
    recorded test IoUs, the final ``champion`` and the publishers' output."""
    jobs = [
        [[str(workdir / f"start-{order}"), f"race-{order}", delays[i], iou] for order, delays in orders.items()]
        for i, iou in enumerate(ious)
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, model_uri, json.dumps(lineage.tags()), json.dumps(job)],
            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for job in jobs
    ]
    client, found = MlflowClient(uri), {}
    try:
        for proc in procs:  # all imported and waiting: then they start within milliseconds of each other
            line = proc.stdout.readline()
            assert line.strip() == "ready", line + proc.stdout.read()
        for order in orders:
            (workdir / f"start-{order}").touch()
            log = "".join(output_until_result(proc) for proc in procs)  # blocks until each has published
            name = f"race-{order}"
            versions = {
                int(v.version): float(v.tags["test_iou"]) for v in client.search_model_versions(f"name = '{name}'")
            }
            found[order] = versions, int(client.get_registered_model(name).aliases["champion"]), log
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return found


def output_until_result(proc: subprocess.Popen) -> str:
    """A publisher's output up to its next RESULT line (MLflow prints its own lines before it)."""
    lines = []
    while not lines or not lines[-1].startswith("RESULT "):
        lines.append(proc.stdout.readline())
        assert lines[-1], "a publisher stopped:\n" + "".join(lines)
    return "".join(lines)


def expected_champion(versions: dict[int, float]) -> int:
    """The highest test IoU; among equals the earliest version (a tie never moves the champion)."""
    top = max(versions.values())
    return min(v for v, iou in versions.items() if iou == top)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Lineage]:
    """A tiny ONNX model and the lineage every publisher registers it with (one test split)."""
    root = tmp_path_factory.mktemp("race")
    model = onnx_model(root / "model.onnx", ONE, 0.0)
    lineage = Lineage(OnnxPredictor(model).spec, data_version="d", test_split="0123456789ab", test_images=6)
    return root, model, lineage


def logged_in(uri: str, model: Path) -> str:
    """The model logged once in ``uri``'s store: every publisher registers it (with its own test IoU)."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("race")
        with mlflow.start_run():
            return log_pyfunc(model, OnnxPredictor(model).targets, _grey_png()).model_uri
    finally:
        mlflow.set_tracking_uri(before)


# The best (0.9, twice: the earlier of the two must win) registered first, last, or all at once.
ORDERS = {"all-at-once": [0.0, 0.0, 0.0], "best-first": [0.0, 0.5, 1.0], "best-last": [1.0, 0.5, 0.0]}
IOUS = [0.9, 0.7, 0.9]


def check(found: dict[str, tuple[dict[int, float], int, str]]) -> None:
    for order, (versions, champion, log) in found.items():
        assert sorted(versions) == list(range(1, len(IOUS) + 1)), f"{order}: a version was lost"
        assert sorted(versions.values()) == sorted(IOUS), order
        assert champion == expected_champion(versions), (order, versions, champion, log)


@pytest.mark.slow
def test_racing_publishers_leave_the_best_champion_in_a_sqlite_store(published) -> None:
    root, model, lineage = published
    uri = f"sqlite:///{root / 'mlflow.db'}"
    check(races(uri, logged_in(uri, model), lineage, IOUS, ORDERS, root))


@pytest.mark.slow
def test_racing_publishers_leave_the_best_champion_on_a_tracking_server(published, mlflow_server) -> None:  # noqa: F811
    root, model, lineage = published
    url, _ = mlflow_server
    (root / "server").mkdir(exist_ok=True)  # start files apart from the SQLite test's
    check(races(url, logged_in(url, model), lineage, IOUS, {"all-at-once": ORDERS["all-at-once"]}, root / "server"))
