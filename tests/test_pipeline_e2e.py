"""The whole pipeline through the real `dvc` CLI: every output, the registry, and the CLI agreeing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SYNTHETIC_PHOTO
from mlflow.tracking import MlflowClient
from PIL import Image

TINY = {
    "resize": {"size": 64},
    "model": {"base_width": 8, "depth": 3},
    "train": {"epochs": 2, "batch_size": 32},
    "runtime": {"threads": 2},
    "export": {"latency_repeats": 1},
}
OUTPUTS = [
    "data/sample.zip",
    "data/fused/masks.npy",
    "data/resized/images.npy",
    "data/split/test.txt",
    "models/model.pt",
    "models/model.onnx",
    "models/model.ts",
    "models/run.json",
    "metrics/train.json",
    "metrics/train_history.csv",
    "metrics/train_curves.png",
    "metrics/evaluate.json",
    "metrics/evaluate_thresholds.csv",
    "metrics/evaluate_per_image.csv",
    "metrics/evaluate_thresholds.png",
    "metrics/evaluate_histogram.png",
    "metrics/evaluate_overlays.png",
    "metrics/export.json",
]


def test_full_pipeline_on_the_built_in_sample(project) -> None:
    project.set_params(sample={"n": 80, "image_size": 256, "mask_size": 256}, **TINY)
    project.dvc("repro")
    missing = [p for p in OUTPUTS if not (project.root / p).exists()]
    assert not missing, missing

    shown = project.dvc("metrics", "show").stdout
    for key in ("iou_native", "background_accuracy", "best_val_iou", "parity"):
        assert key in shown, key
    evaluate = json.loads((project.root / "metrics" / "evaluate.json").read_text())
    assert 0 <= evaluate["iou"] <= 1 and evaluate["images"] == 8

    client = MlflowClient(f"sqlite:///{project.root / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("eyelip", "champion")
    candidate = client.get_model_version_by_alias("eyelip", "candidate")
    assert int(champion.version) == int(candidate.version) == 1
    run_id = json.loads((project.root / "models" / "run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.data.metrics["test_iou"] == pytest.approx(evaluate["iou"])
    assert {"val_iou", "test_iou", "test_iou_native"} <= set(run.data.metrics)

    again = project.dvc("repro")
    assert "Running stage" not in again.stdout


def test_cli_evaluate_agrees_with_the_stage(project, synthetic: Path, tmp_path: Path) -> None:
    # resize.input_scale 2: 64 px photos in, 32 px masks out, through every stage and both CLIs.
    # 30 epochs of batch 4 on 38 faces (seeded, 2 threads: the same steps on any machine) find eyes and
    # lips from about epoch 8 on, so that the comparison means something.
    project.set_params(
        data={"root": str(synthetic)},
        **{**TINY, "resize": {"size": 32, "input_scale": 2}, "train": {"epochs": 30, "batch_size": 4, "lr": 0.01}},
    )
    project.dvc("repro", "export")
    stage = json.loads((project.root / "metrics" / "evaluate.json").read_text())
    assert stage["iou"] > 0, stage  # some eyes and lips found: the numbers compared below are not all trivial
    project.run(
        "eyelip",
        "evaluate",
        "--model",
        "models/model.onnx",
        "--data",
        str(synthetic),
        "--ids",
        "data/split/test.txt",
        "--json",
        "cli.json",
    )
    cli = json.loads((project.root / "cli.json").read_text())
    for key in ("iou", "iou_native", "iou_eyes_lips", "dice", "accuracy"):
        assert cli[key] == pytest.approx(stage[key], abs=2e-4), key

    project.run("eyelip", "predict", str(synthetic / "CelebA-HQ-img" / "2001.jpg"), "--out", str(tmp_path))
    assert Image.open(tmp_path / "2001_mask.png").size == (SYNTHETIC_PHOTO[2001],) * 2
