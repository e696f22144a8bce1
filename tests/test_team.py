"""The team stack of docs/scaling.md, for real: `mlflow server` on PostgreSQL with artifacts in S3 (moto's
server on loopback), the DVC remote in the same S3, and several runs and publishers at once.

The stack starts once per pytest worker (tests/servers.py) and every test uses its own experiment and
registered model name, so the tests share it without seeing each other's runs. Without the `server`
extra or PostgreSQL the tests skip, naming what to install (`.ci/run` installs both).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shlex
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, REPO, Project
from mlflow import MlflowClient
from servers import BUCKETS, TeamStack, start_logged, stop, team_stack, team_stack_missing
from test_queue import TINY as QUEUE_TINY
from test_queue import run_queue, wait_for_queue
from test_registry import ONE, eval_set, lineage, onnx_model
from test_remote import clone_pulls_everything, tiny_project

from eyelip.params import whole as P

pytestmark = pytest.mark.slow  # each test starts DVC projects or publishers, and the stack takes minutes to start

RECIPE = REPO / "docs" / "scaling.md"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamStack]:
    missing = team_stack_missing()
    if missing:
        pytest.skip(f"team stack: {missing}")
    with team_stack(tmp_path_factory.mktemp("team-stack")) as started:
        yield started


def sql(stack: TeamStack, query: str, *args: object) -> list[tuple]:
    """Rows straight from the server's PostgreSQL store: what MLflow wrote, not what its API says."""
    import psycopg

    with psycopg.connect(stack.database_uri) as conn:
        return conn.execute(query, args).fetchall()


def s3_keys(stack: TeamStack, bucket: str, prefix: str = "") -> list[str]:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        aws_access_key_id="any",
        aws_secret_access_key="any",
        region_name="us-east-1",
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def recipe(stack: TeamStack) -> list[str]:
    """The client lines of docs/scaling.md's team recipe, with the placeholders set to the started stack."""
    text = RECIPE.read_text()
    block = re.search(r"<!-- team recipe: tests/test_team.py -->\s*```bash\n(.*?)```", text, re.S)
    assert block, f"{RECIPE}: the team recipe block is missing"
    host = {
        "TRACKING-HOST:5000": stack.tracking_uri.split("//")[1],
        "S3-HOST:9000": stack.s3_endpoint.split("//")[1],
        "BUCKET": BUCKETS[1],
    }
    lines = []
    for line in block.group(1).splitlines():
        line = line.split(" #")[0].strip()
        for placeholder, value in host.items():
            line = line.replace(placeholder, value)
        if line and not line.startswith("pip "):  # the venv has the extra already
            lines.append(line)
    return lines


def test_recipe_trains_logs_pushes_and_a_clone_pulls(project: Project, stack: TeamStack, tmp_path: Path) -> None:
    """docs/scaling.md's client commands, as written, against the stack: runs and the registry in
    PostgreSQL, artifacts in S3 through the server, the DVC cache in S3; a teammate's clone pulls
    everything, reproduces nothing and reads the same gate decision from the server."""
    tiny_project(project)
    project.set_params(tracking={"experiment": "recipe"}, export={"registered_model": "recipe"})
    # Only what the recipe sets: no tracking URI or S3 credentials from this machine's environment.
    env = {k: v for k, v in project.env.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    exported: dict[str, str] = {}
    outputs = {}
    for line in recipe(stack):
        words = shlex.split(line)
        if words[0] == "export":
            exported.update(word.split("=", 1) for word in words[1:])
            continue
        project.env = {**env, **exported}
        outputs[words[0] + " " + words[1]] = project.run(*words, timeout=600).stdout
    assert set(exported) >= {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, exported
    assert not (project.root / "mlflow.db").exists() and not (project.root / "mlruns").exists()

    run_id = json.loads((project.root / "models" / "run.json").read_text())["run_id"]
    ((status, name),) = sql(stack, "SELECT status, name FROM runs WHERE run_uuid = %s", run_id)
    assert status == "FINISHED"
    steps = sql(stack, "SELECT step FROM metrics WHERE run_uuid = %s AND key = 'val_iou' ORDER BY step", run_id)
    assert [step for (step,) in steps] == [1, 2]  # every epoch (TINY: 2)
    assert sql(stack, "SELECT version FROM model_versions WHERE name = 'recipe'") == [(1,)]
    artifacts = s3_keys(stack, BUCKETS[0])  # proxied by the server: the client had no endpoint for them
    assert any(run_id in key and key.endswith("train_history.csv") for key in artifacts), artifacts
    assert any(key.startswith("eyelip/files/md5/") for key in s3_keys(stack, BUCKETS[1]))
    gate = "registry 'recipe': v1 promoted to champion (no champion before)"
    assert gate in outputs["eyelip report"].splitlines()[0]
    assert stack.tracking_uri in outputs["eyelip ui"]

    clone = clone_pulls_everything(project, tmp_path / "clone", env=exported)
    report = clone.run("eyelip", "report", "--baseline", "HEAD").stdout
    assert gate in report.splitlines()[0], report  # the teammate sees the same decision, from the server


@pytest.fixture
def on_stack(project: Project, stack: TeamStack) -> Project:
    """A tiny project whose stages log to the stack, its data stages run and committed."""
    project.env.update(stack.client_env)
    name = project.root.parent.name[:40]  # the test's own experiment and registered model
    project.set_params(
        **{**QUEUE_TINY, "tracking": {"experiment": name}, "export": {**QUEUE_TINY["export"], "registered_model": name}}
    )
    project.dvc("repro", "split")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "tiny project")
    return project


def test_queue_workers_on_postgres_record_every_run_and_version(on_stack: Project, stack: TeamStack) -> None:
    run_queue(on_stack, {f"seed-{seed}": f"train.seed={seed}" for seed in range(2)})
    name = on_stack.params["export"]["registered_model"]
    client = MlflowClient(stack.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(on_stack.params["tracking"]["experiment"]).experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["seed-0", "seed-1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        logged = {"val_iou", "test_iou", "test_iou_native", "export_onnxruntime_max_abs_prob_diff"}
        assert logged <= set(run.data.metrics), run.data.metrics
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_iou")] == [1]
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]  # none lost
    assert {v.tags["mlflow_run_id"] for v in versions} == {run.info.run_id for run in runs}
    assert sql(stack, "SELECT count(*) FROM registered_model_aliases WHERE name = %s AND alias = 'champion'", name) == [
        (1,)
    ]
    champion = client.get_model_version_by_alias(name, "champion")
    best = max(float(v.tags["test_iou"]) for v in versions)
    assert float(champion.tags["test_iou"]) == best, f"champion v{champion.version} is not the best ({best})"


# Two exports that finish together: each publisher (eyelip.release.registry.publish) runs in its own
# process, as two CI jobs would. The interleaving is forced, not left to chance: both start together,
# each holds its first `champion` alias write until the other has reached its own (so both read the
# registry before either moves the alias), then the one named "late" waits until the other has finished.

PUBLISHERS = {"worse": 0.6, "better": 0.8}  # test IoU on the same test data


def publisher(
    env: dict[str, str], workdir: str, role: str, onnx: str, late: bool, start, both_decided, early_done
) -> None:
    """One export's publish, in a spawned process (so its environment and MLflow state are its own)."""
    os.environ.update(env)
    os.chdir(workdir)
    from eyelip.release.registry import publish

    original = MlflowClient.set_registered_model_alias
    held = threading.Event()

    def hold_champion(self, name: str, alias: str, version) -> None:
        # Only delays the real call: the registry sees the very writes publish makes, in a forced order.
        if alias == "champion" and not held.is_set():
            held.set()
            try:
                both_decided.wait(timeout=60)
            except threading.BrokenBarrierError:
                pass  # the other publisher wrote no champion: nothing to interleave with
            if late:
                early_done.wait(timeout=300)
        return original(self, name, alias, version)

    MlflowClient.set_registered_model_alias = hold_champion
    test = eval_set(Path(workdir) / "data", 0, ONE)  # the same seed in each process: the same test data
    (Path(workdir) / "export.json").write_text("{}")
    summary = {
        "parity": {"onnxruntime": {"max_abs_prob_diff": 0.0, "threshold": 0.5}},
        "latency_ms": {"onnxruntime": {"p50": 1.0}},
    }
    params = P.parse({"tracking": {"experiment": env["RACE"]}, "export": {"registered_model": env["RACE"]}})
    start.wait(timeout=300)
    publish(
        params,
        onnx,
        Path(workdir) / "export.json",
        summary,
        PUBLISHERS[role],
        lineage(Path(onnx), test, data_version="race"),
        test,
    )


@pytest.mark.parametrize("last", ["better", "worse"])
def test_two_publishers_finishing_together_leave_the_best_champion(stack: TeamStack, tmp_path: Path, last: str) -> None:
    race = f"race-{last}-last"
    ctx = multiprocessing.get_context("spawn")
    start, both_decided, early_done = ctx.Barrier(2), ctx.Barrier(2), ctx.Event()
    procs = {}
    for role in PUBLISHERS:
        workdir = tmp_path / role
        workdir.mkdir()
        onnx = onnx_model(workdir / "model.onnx", ONE, 20.0 if role == "better" else 0.0)
        env = {**stack.client_env, "RACE": race}
        procs[role] = ctx.Process(
            target=publisher, args=(env, str(workdir), role, str(onnx), role == last, start, both_decided, early_done)
        )
        procs[role].start()
    early = next(role for role in PUBLISHERS if role != last)
    procs[early].join(timeout=400)
    early_done.set()
    procs[last].join(timeout=400)
    for role, proc in procs.items():
        if proc.is_alive():
            proc.kill()
        assert proc.exitcode == 0, f"the {role} publisher failed ({proc.exitcode})"

    client = MlflowClient(stack.tracking_uri)
    versions = {v.tags["test_iou"]: int(v.version) for v in client.search_model_versions(f"name='{race}'")}
    assert sorted(versions.values()) == [1, 2], versions  # no lost version
    runs = client.search_runs([client.get_experiment_by_name(race).experiment_id])
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
    assert all("export_onnxruntime_max_abs_prob_diff" in run.data.metrics for run in runs)
    assert sql(stack, "SELECT count(*) FROM registered_model_aliases WHERE name = %s AND alias = 'champion'", race) == [
        (1,)
    ]
    champion = client.get_model_version_by_alias(race, "champion")
    assert champion.tags["test_iou"] == f"{PUBLISHERS['better']:.6f}", (
        f"champion v{champion.version} (test IoU {champion.tags['test_iou']}); versions {versions}"
    )


def test_a_killed_queue_worker_leaves_its_run_failed_not_running(
    on_stack: Project, stack: TeamStack, tmp_path: Path
) -> None:
    on_stack.dvc("exp", "run", "--queue", "-n", "killed", "-S", "train.epochs=5000")
    # Not through Project.run: the worker keeps `dvc queue start`'s output open until the queue is empty.
    worker = start_logged(
        [str(BIN / "dvc"), "queue", "start", "-j", "1"], tmp_path / "worker.log", cwd=on_stack.root, env=on_stack.env
    )
    try:
        client = MlflowClient(stack.tracking_uri)
        experiment = on_stack.params["tracking"]["experiment"]
        deadline = time.monotonic() + 300
        while True:  # killed mid-training: once an epoch is logged
            found = client.get_experiment_by_name(experiment)
            runs = client.search_runs([found.experiment_id]) if found else []
            if runs and "val_iou" in runs[0].data.metrics:
                break
            assert time.monotonic() < deadline, f"no epoch logged in 300 s:\n{on_stack.dvc('queue', 'status').stdout}"
            time.sleep(2)
        on_stack.dvc("queue", "kill", "killed")  # SIGINT to the worker's process group, as Ctrl+C would
        status = wait_for_queue(on_stack, timeout=120)
    finally:
        stop(worker)
    assert "Running" not in status, status
    (run,) = client.search_runs([found.experiment_id])
    assert run.info.status in ("FAILED", "KILLED"), f"run {run.info.run_id} left {run.info.status}"
