"""MLflow tracking: where runs go, what each run records, and how later stages find it.

The store is SQLite at the repository root (``sqlite:///<root>/mlflow.db``). ``DVC_ROOT`` (set by
``dvc repro`` and ``dvc exp run``, also in ``--temp``/``--queue`` copies) names the root, so runs
land in the original repository rather than vanishing with a temporary copy.
``MLFLOW_TRACKING_URI`` overrides it (a shared tracking server).

A fresh SQLite store is created by the first process that opens it (tables, migrations, the default
experiment; seconds). Parallel ``dvc queue`` workers would all find it empty and race to create the
same tables, and all but one fail (``table ... already exists``), so :func:`open_store` lets one
process at a time open it, under a file lock; later ones find it complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import yaml

from eyelip import atomic
from eyelip.params.runtime import RuntimeParams
from eyelip.params.tracking import TrackingParams
from eyelip.tracking import environment

RUN_FILE = "models/run.json"


class Tracked(Protocol):
    """What starting a run reads: a stage's params (an ``eyelip.params.core.View`` with ``tracking`` and
    ``runtime``, or the whole ``Params``), not the whole schema, so that a tracked stage depends on the
    schema of the sections it reads only."""

    @property
    def tracking(self) -> TrackingParams: ...

    @property
    def runtime(self) -> RuntimeParams: ...

    def flat(self) -> dict[str, Any]: ...


def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def open_store(uri: str) -> None:
    """Open the store at ``uri`` once in this process, creating it if new; for a SQLite file, one
    process at a time (see the module docstring). MLflow caches the opened store, so the run that
    follows reuses it."""
    if not uri.startswith("sqlite:///"):
        return  # a tracking server keeps its own store
    from filelock import FileLock
    from mlflow import MlflowClient

    # The lock lives outside the project (no file for git to see), keyed by the store's real path so
    # that workers in DVC's temporary copies, which log to the original root's store, share it.
    where = Path(uri[len("sqlite:///") :]).resolve()
    key = hashlib.sha1(str(where).encode()).hexdigest()[:16]
    with FileLock(Path(tempfile.gettempdir()) / f"eyelip-mlflow-{key}.lock"):
        MlflowClient(uri)  # creates and migrates a fresh store's schema, or finds it complete


def git_commit(cwd: Path | None = None) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"  # not a git checkout, or no commit yet


def data_version(lock_file: str | Path = "dvc.lock", stages: tuple[str, ...] = ("resize", "split")) -> str:
    """Short hash of the data outputs recorded in dvc.lock: equal hashes mean the same data."""
    try:
        lock = yaml.safe_load(Path(lock_file).read_text()) or {}
    except OSError:
        return "unknown"
    hashes = [out.get("md5", "") for name in stages for out in lock.get("stages", {}).get(name, {}).get("outs", [])]
    return hashlib.sha1("".join(hashes).encode()).hexdigest()[:12] if any(hashes) else "unknown"


def run_tags() -> dict[str, str]:
    tags = {"git_commit": git_commit(), "data_version": data_version()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    return tags


def ensure_experiment(name: str) -> str:
    """The experiment's id, creating it if needed. With the local SQLite store its artifacts go to
    ``<root>/mlruns``: MLflow's default is relative to the working directory, which for
    ``dvc exp run --temp/--queue`` is a temporary copy that DVC deletes, artifacts included."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    served = tracking_uri().startswith(("http://", "https://", "databricks"))  # the server picks the place
    try:
        return mlflow.create_experiment(name, None if served else (project_root() / "mlruns").as_uri())
    except mlflow.exceptions.MlflowException:  # a parallel queue worker created it first
        return mlflow.get_experiment_by_name(name).experiment_id


def start_run(params: Tracked, run_id: str | None = None):
    """Start (or, with ``run_id``, resume) the pipeline's MLflow run in ``tracking.experiment``; returns the
    active run."""
    import mlflow  # imported lazily: it takes seconds, and only training needs it at start-up

    # A stray MLFLOW_RUN_ID would silently override run_id and mix two runs.
    os.environ.pop("MLFLOW_RUN_ID", None)
    open_store(tracking_uri())
    mlflow.set_tracking_uri(tracking_uri())
    if run_id:
        return mlflow.start_run(run_id=run_id)
    mlflow.set_experiment(experiment_id=ensure_experiment(params.tracking.experiment))
    run = mlflow.start_run(run_name=os.environ.get("DVC_EXP_NAME") or None)
    mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in params.flat().items()})
    mlflow.set_tags(run_tags() | environment.collect(params.runtime.device))
    return run


def write_run_file(run: Any, path: str | Path = RUN_FILE) -> None:
    atomic.write_json(
        path, {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "run_name": run.info.run_name}
    )


def read_run_id(path: str | Path = RUN_FILE) -> str | None:
    path = Path(path)
    return json.loads(path.read_text())["run_id"] if path.exists() else None


def close_run(error: BaseException | None = None) -> None:
    """End the active MLflow run with the status that says how its stage ended: FINISHED; KILLED on
    Ctrl+C or SIGTERM (a KeyboardInterrupt, see :mod:`eyelip.stage`); FAILED on an error. A run left
    open would be ended FINISHED by MLflow's exit hook, whatever happened."""
    mlflow = sys.modules.get("mlflow")  # not loaded: no run was started
    if mlflow is None or mlflow.active_run() is None:
        return
    status = "FINISHED" if error is None else "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
    mlflow.end_run(status)


@contextmanager
def resume_run(params: Tracked, run_file: str | Path = RUN_FILE) -> Iterator[Any]:
    """The training stage's run (``run_file``) resumed, for a later stage to add to (a new run when
    there is none); use as ``with resume_run(params) as run:``, which ends it (:func:`close_run`)."""
    run_id = read_run_id(run_file)
    if run_id is None:
        print(f"{run_file} not found: logging to a new MLflow run")
    run = start_run(params, run_id)
    try:
        yield run
    except BaseException as exc:
        close_run(exc)
        raise
    close_run()


class TrackedRun:
    """The training stage's MLflow run: params and tags once, metrics per epoch, artifacts at the end."""

    def __init__(self, params: Tracked) -> None:
        self.params = params
        self.data_version = data_version()
        self.run: Any = None

    def start(self, run_id: str | None) -> str:
        """Start a new run, or continue ``run_id`` (a resumed training); returns the run id."""
        self.run = start_run(self.params, run_id)
        write_run_file(self.run)
        # Beside the metrics in git, so a report can compare environments without the MLflow store.
        atomic.write_json(environment.FILE, environment.collect(self.params.runtime.device))
        print(f"MLflow: run {self.run.info.run_name!r} ({self.run.info.run_id}) in {tracking_uri()}")
        return self.run.info.run_id

    def log_epoch(self, row: Mapping[str, float]) -> None:
        import mlflow

        mlflow.log_metrics(
            {k: float(v) for k, v in row.items() if k not in ("epoch", "seconds")}, step=int(row["epoch"])
        )

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """The run's numeric summary (best_val_iou, train_minutes, ...), so runs compare without files."""
        import mlflow

        mlflow.log_metrics(
            {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        )

    def finish(self, artifacts: list[Path], model: Any, input_example: Any) -> None:
        """Log files and the model (with signature and input example), then close the run."""
        import mlflow
        import torch
        from mlflow.models import infer_signature

        for path in artifacts:
            mlflow.log_artifact(str(path))
        model.eval()
        with torch.no_grad():
            output = model(torch.from_numpy(input_example)).numpy()
        # Explicit requirements: inferring them warns about torch's local "+cpu" version label.
        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]
        mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=input_example,
            pip_requirements=requirements,
            signature=infer_signature(input_example, output),
        )
        mlflow.end_run()
