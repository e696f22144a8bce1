"""Stage `export`: models/model.onnx and models/model.ts, checked against PyTorch, then the registry gate.

Parity on up to 64 real test-split images must hold (max |prob diff| < 1e-4 and > 99.9% identical
mask pixels) for both exports, or neither file is published. Writes metrics/export.json (parity and
CPU latency). In the training run's MLflow run it logs those numbers and the ONNX model, registers
that model as a new version of ``export.registered_model`` (alias ``candidate``) and moves
``champion`` to it only if its test IoU (metrics/evaluate.json) beats the champion's.
"""

import json
from pathlib import Path

import numpy as np

from eyelip import atomic, stage
from eyelip import params as P
from eyelip.data.preprocess import to_nchw
from eyelip.errors import DataError, EyelipError, ParamError
from eyelip.model.checkpoint import check_fits, load_model
from eyelip.serve.export import (
    TorchScriptPredictor,
    export_onnx,
    export_torchscript,
    measure_latency,
    parity,
    register,
)
from eyelip.serve.predictors import OnnxPredictor, TorchPredictor
from eyelip.tracking import store as tracking
from eyelip.training.dataset import ResizedArrays, split_rows

MODEL, ONNX, TORCHSCRIPT = Path("models/model.pt"), Path("models/model.onnx"), Path("models/model.ts")
EVALUATE, METRICS = Path("metrics/evaluate.json"), Path("metrics/export.json")
PARITY_IMAGES, MAX_PROB_DIFF, MIN_IDENTICAL = 64, 1e-4, 0.999


def test_iou() -> float:
    if not EVALUATE.is_file():
        raise EyelipError(f"{EVALUATE}: not found; the registry gate needs the test IoU, run `dvc repro evaluate`")
    metrics = json.loads(EVALUATE.read_text())
    if not isinstance(metrics.get("iou"), (int, float)):
        raise EyelipError(f"{EVALUATE}: no numeric 'iou'; re-run `dvc repro evaluate`")
    return float(metrics["iou"])


def check_parity(name: str, result: dict) -> None:
    if not (result["max_abs_prob_diff"] < MAX_PROB_DIFF and result["identical_mask_fraction"] > MIN_IDENTICAL):
        raise EyelipError(
            f"{name} export disagrees with PyTorch on {result['images']} test images: max |prob diff| "
            f"{result['max_abs_prob_diff']:.3g} (limit {MAX_PROB_DIFF:g}), identical mask pixels "
            f"{result['identical_mask_fraction']:.5f} (limit > {MIN_IDENTICAL}); nothing was exported")


def main(params: dict) -> None:
    name = P.get(params, "export.registered_model", "eyelip")
    if not isinstance(name, str) or not name.strip():
        raise ParamError(f"export.registered_model: expected a model name, got {name!r}")
    repeats = P.integer(params, "export.latency_repeats", minimum=1, default=10)
    iou = test_iou()  # checked first: no point exporting what cannot be gated
    run_id = tracking.read_run_id()
    if run_id is None:
        raise EyelipError(f"{tracking.RUN_FILE}: not found; run `dvc repro train` to create the MLflow run")

    model, ckpt = load_model(MODEL)
    size, targets = int(ckpt["size"]), list(ckpt["targets"])
    input_size = int(ckpt["input_size"])
    arrays = ResizedArrays("data/resized")
    check_fits(ckpt, arrays, str(MODEL))
    rows = np.sort(split_rows(arrays, "data/split", "test")[:PARITY_IMAGES])
    if not len(rows):
        raise DataError("data/split/test.txt: empty; parity needs test images (raise split.test)")
    images = np.asarray(arrays.images[rows])

    reference = TorchPredictor(MODEL)
    # target_parts and rule let `eyelip evaluate` rebuild the ground truth the model was trained on.
    meta = {"target_parts": reference.target_parts, "rule": reference.rule, "prior": reference.prior,
            "train_size": ckpt["train_size"],
            "epoch": ckpt.get("epoch"),
            "val_iou": ckpt.get("val_iou"), "model": ckpt["model"], "mlflow_run_id": run_id,
            "data_version": tracking.data_version()}
    # Both files stay temporary until both pass parity: a failed check publishes neither.
    with atomic.atomic_path(ONNX) as onnx_tmp, atomic.atomic_path(TORCHSCRIPT) as ts_tmp:
        export_onnx(model, onnx_tmp, size, targets, meta, input_size)
        export_torchscript(model, ts_tmp, input_size)
        checks = {"onnxruntime": parity(reference, OnnxPredictor(onnx_tmp), images),
                  "torchscript": parity(reference, TorchScriptPredictor(ts_tmp, size, targets), images)}
        for fmt, result in checks.items():
            check_parity(fmt, result)
        speed = measure_latency(model, onnx_tmp, ts_tmp, input_size, repeats=repeats)
    summary = {"parity": checks, **speed, "onnx_bytes": ONNX.stat().st_size,
               "torchscript_bytes": TORCHSCRIPT.stat().st_size}
    atomic.write_json(METRICS, summary)
    for fmt, result in checks.items():
        print(f"parity {fmt}: max |prob diff| {result['max_abs_prob_diff']:.2e}, identical mask pixels "
              f"{result['identical_mask_fraction']:.6f} on {result['images']} test images")
    for fmt, ms in speed["latency_ms"].items():
        print(f"latency {fmt}: " + ", ".join(f"batch {k[1:]} {v:.1f} ms" for k, v in ms.items()))

    import mlflow
    import onnx
    from mlflow.models import infer_signature

    example = to_nchw(images[:2])
    logits = OnnxPredictor(ONNX).session.run(None, {"image": example})[0]
    with tracking.start_run(P.get(params, "tracking.experiment", "eyelip"), params, run_id):  # ends it, even on error
        mlflow.log_metrics({f"export_{fmt}_{key}": float(value) for fmt, result in checks.items()
                            for key, value in result.items() if key != "threshold"})
        mlflow.log_metrics({f"latency_ms_{fmt}_{key}": value for fmt, ms in speed["latency_ms"].items()
                            for key, value in ms.items()})
        mlflow.log_artifact(str(METRICS))
        # Pinned requirements: inferring them would load the model in a subprocess (slow).
        info = mlflow.onnx.log_model(onnx.load(str(ONNX)), name="onnx", input_example=example,
                                     signature=infer_signature(example, logits), save_as_external_data=False,
                                     onnx_execution_providers=["CPUExecutionProvider"],
                                     pip_requirements=mlflow.onnx.get_default_pip_requirements())
        decision = register(info.model_uri, name, iou, tags={"mlflow_run_id": run_id,
                                                             "data_version": meta["data_version"]})
        mlflow.set_tags({"registry_version": decision["version"], "registry_champion": decision["champion"]})


if __name__ == "__main__":
    stage.run("export", main)
