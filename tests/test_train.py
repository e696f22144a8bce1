"""Training: it learns the synthetic faces, logs every epoch to a real MLflow store, resumes, and sweeps."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_samples
from mlflow.tracking import MlflowClient

from eyelip.data.arrays import ids_text
from eyelip.data.dataset import ResizedArrays
from eyelip.data.fuse import fuse_dataset
from eyelip.data.resize import resize_dataset
from eyelip.data.source import Source
from eyelip.data.spec import DataSpec
from eyelip.errors import ParamError
from eyelip.model.checkpoint import Resume, load_model
from eyelip.training.loop import TrainConfig, Trainer, fit

EPOCH_KEYS = {"train_iou", "val_iou", "train_jaccard_loss", "val_jaccard_loss", "train_loss", "val_loss", "lr"}
# Small and fast: 64 px, a narrow U-Net; enough to check the mechanics.
FAST = {
    "resize": {"size": 64},
    "model": {"base_width": 8, "depth": 3},
    "train": {"epochs": 2, "batch_size": 32},
    "runtime": {"threads": 2},
}


def test_overfits_a_few_faces(synthetic: Path, tmp_path: Path) -> None:
    """The model, loss, augmentation-free loop and IoU together can fit eyes and lips."""
    source = Source(copy_samples(synthetic, tmp_path / "faces", list(range(8))))  # only the faces it trains on
    fuse_dataset(source, tmp_path / "fused", {"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}, n_jobs=1)
    resize_dataset(source, tmp_path / "fused", tmp_path / "resized", 64, n_jobs=1)
    arrays = ResizedArrays(tmp_path / "resized")
    rows = np.arange(8)
    # Seeded, on fixed threads: the same steps on any machine (it passes 0.8 at about epoch 50 of 150).
    cfg = TrainConfig(
        model={"base_width": 16, "depth": 4},
        epochs=150,
        batch_size=8,
        lr=3e-3,
        warmup_epochs=0,
        schedule="constant",
        loss={"jaccard": 1.0, "bce": 0.5},
        runtime={"threads": 2},
    )
    trainer = Trainer(cfg, arrays, rows, rows, ["eyes_lips"])
    before = trainer.evaluate(rows)["val_iou"]
    for epoch in range(1, cfg.epochs + 1):
        trainer.train_epoch(epoch)
        if epoch % 5 == 0 and trainer.evaluate(rows)["val_iou"] > 0.8:
            break
    after = trainer.evaluate(rows)["val_iou"]
    assert before < 0.1 and after > 0.8, (before, after)


def history(project) -> list[dict[str, str]]:
    with open(project.root / "metrics" / "train_history.csv") as f:
        return list(csv.DictReader(f))


def test_two_epoch_repro_is_tracked_in_mlflow_and_dvc(project, synthetic: Path) -> None:
    project.set_params(data={"root": str(synthetic)}, **FAST)
    project.dvc("repro", "train")
    store = project.root / "mlflow.db"
    assert store.exists(), "the default store is SQLite at the repository root"
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("eyelip")
    (run,) = client.search_runs([experiment.experiment_id])
    for key in EPOCH_KEYS:
        steps = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in steps] == [1, 2], key
    assert run.data.params["train.lr"] == str(project.params["train"]["lr"])
    assert run.data.params["resize.size"] == "64"
    head = project.run("git", "rev-parse", "HEAD").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", run.data.tags["git_commit"]) and run.data.tags["git_commit"] == head
    assert run.data.tags["data_version"] != "unknown"
    metrics = json.loads((project.root / "metrics" / "train.json").read_text())
    for key in ("train_iou", "val_iou", "train_jaccard_loss", "val_jaccard_loss"):
        assert metrics["final"][key] == pytest.approx(run.data.metrics[key], rel=1e-6)
    assert metrics["best_val_iou"] == pytest.approx(max(float(r["val_iou"]) for r in history(project)))
    assert json.loads((project.root / "models" / "run.json").read_text())["run_id"] == run.info.run_id
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"train_history.csv", "train_curves.png"} <= artifacts
    shown = project.dvc("metrics", "show").stdout
    assert "best_val_iou" in shown


def test_resume_after_a_kill_continues_from_the_resume_state(project, synthetic: Path) -> None:
    project.set_params(data={"root": str(synthetic)}, **{**FAST, "train": {**FAST["train"], "epochs": 3}})
    project.dvc("repro", "split")
    # Interrupt training (SIGKILL: no chance to clean up) once epoch 1's resume state is on disk.
    proc = subprocess.Popen(
        ["python", "pipeline/train.py"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    resume = project.root / "models" / "resume.pt"
    deadline = time.monotonic() + 300
    while not resume.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert resume.exists(), "training never wrote its resume state"
    assert not (project.root / "metrics" / "train.json").exists()
    (project.root / "models" / "checkpoint.pt").write_bytes(b"resume state of an older eyelip")
    resumed = project.dvc("repro", "train")
    assert "resuming from models/resume.pt after epoch" in resumed.stdout
    old_note = "models/checkpoint.pt: an older eyelip's resume state, not read (it is models/resume.pt now)"
    assert old_note in resumed.stdout
    first_run = [float(r["val_iou"]) for r in history(project)]

    project.dvc("repro", "--force", "train")  # a finished run is not resumed: trains from scratch
    assert [float(r["val_iou"]) for r in history(project)] == pytest.approx(first_run, abs=1e-6)


def test_resumed_run_restores_a_best_model_from_before_the_interruption(
    tiny_arrays: ResizedArrays, tmp_path: Path
) -> None:
    """`dvc repro` deletes models/model.pt before a resumed stage runs; the best epoch may be one that
    came before the interruption, so the resume state carries that model and the resume puts it back."""
    cfg = TrainConfig(model={"base_width": 4, "depth": 2}, epochs=3, batch_size=8)
    rows = np.arange(16)
    model, resume = tmp_path / "model.pt", tmp_path / "resume.pt"

    def interrupt(row: dict) -> None:
        raise KeyboardInterrupt  # after epoch 1's resume state is written

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tiny_arrays, rows[:8], rows[8:], model, resume, "job", on_epoch=interrupt)
    saved = torch.load(model, weights_only=True)
    model.unlink()  # as dvc does before running the stage again

    def at_resume(run_id: str | None) -> str | None:  # called after the resume state is loaded, before epoch 2
        restored = torch.load(model, weights_only=True)
        assert restored["epoch"] == 1
        assert all(torch.equal(restored["state_dict"][k], v) for k, v in saved["state_dict"].items())
        return run_id

    summary = fit(cfg, tiny_arrays, rows[:8], rows[8:], model, resume, "job", on_start=at_resume)
    assert summary["epochs_run"] == 3 and torch.load(model, weights_only=True)["epoch"] == summary["best_epoch"]


def test_a_resume_state_of_another_format_is_reported_not_resumed(
    tiny_arrays: ResizedArrays, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resume file written before the format was versioned (the same job, unfinished) is not trusted."""
    cfg, rows = TrainConfig(model={"base_width": 4, "depth": 2}, epochs=1, batch_size=8), np.arange(16)
    torch.save(
        {"fingerprint": "job", "run_id": None, "finished": False, "state": {}, "best_model": None},
        tmp_path / "resume.pt",
    )
    summary = fit(cfg, tiny_arrays, rows[:8], rows[8:], tmp_path / "model.pt", tmp_path / "resume.pt", "job")
    assert "not resuming: " in capsys.readouterr().out and summary["epochs_run"] == 1
    assert Resume.load(tmp_path / "resume.pt").finished, "replaced by a resume state of the current format"


def test_train_scale_trains_on_the_fine_masks_and_scores_and_saves_at_the_mask_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fine = rng.random((16, 1, 64, 64)) < 0.05
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8))
    np.save(tmp_path / "train_masks.npy", fine.astype(np.uint8))
    np.save(tmp_path / "masks.npy", (fine.reshape(16, 1, 32, 2, 32, 2).mean((3, 5)) >= 0.5).astype(np.uint8))
    (tmp_path / "ids.txt").write_text(ids_text(list(range(16))))
    DataSpec({"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}, 32, input_scale=2, train_scale=2).write(tmp_path)
    arrays, rows = ResizedArrays(tmp_path), np.arange(16)
    cfg = TrainConfig(model={"base_width": 4, "depth": 2}, epochs=1, batch_size=8)
    trainer = Trainer(cfg, arrays, rows[:8], rows[8:], ["eyes_lips"])
    outputs = []
    trainer.model.register_forward_hook(lambda m, _, out: outputs.append((m.training, tuple(out.shape[2:]))))
    trainer.train_epoch(1)
    trainer.evaluate(rows[8:])
    assert set(outputs) == {(True, (64, 64)), (False, (32, 32))}

    fit(cfg, arrays, rows[:8], rows[8:], tmp_path / "model.pt", tmp_path / "resume.pt", "job")
    model, file = load_model(tmp_path / "model.pt")
    assert (file.spec.size, file.spec.input_size, file.spec.train_size) == (32, 64, 64)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1, 32, 32)


def test_a_prior_gate_without_a_prior_is_named_before_training(tiny_arrays: ResizedArrays, tmp_path: Path) -> None:
    cfg = TrainConfig(model={"base_width": 4, "depth": 2, "prior_gate": 4}, epochs=1, batch_size=8)
    rows = np.arange(16)
    with pytest.raises(ParamError, match=r"model\.prior_gate: needs prior channels after R, G, B; set resize\.prior"):
        fit(cfg, tiny_arrays, rows[:8], rows[8:], tmp_path / "model.pt", tmp_path / "resume.pt", "job")
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "resume.pt").exists()


def test_experiment_sweep_gives_one_mlflow_run_each(project, synthetic: Path) -> None:
    project.set_params(data={"root": str(synthetic)}, **FAST)
    project.dvc("repro", "split")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline")
    # The train stage is the one that tracks: evaluating and exporting each would add nothing here.
    project.dvc("exp", "run", "--temp", "-S", "train.lr=0.001", "-n", "lr-small", "train")
    project.dvc("exp", "run", "--temp", "-S", "train.lr=0.01", "-n", "lr-large", "train")
    client = MlflowClient(f"sqlite:///{project.root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("eyelip").experiment_id])
    assert sorted((r.info.run_name, r.data.params["train.lr"]) for r in runs) == [
        ("lr-large", "0.01"),
        ("lr-small", "0.001"),
    ]
    assert {r.data.tags["dvc_experiment"] for r in runs} == {"lr-small", "lr-large"}
    for run in runs:  # artifacts live in the repository's mlruns/, not in the deleted temporary copy
        assert run.info.artifact_uri.startswith((project.root.resolve() / "mlruns").as_uri())
        assert "train_history.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
