"""Stage `export`: models/model.onnx and models/model.ts, checked against PyTorch, then the registry gate.

Parity on up to 64 test-split images must hold for both exports, or neither file is published
(``eyelip.release.export.export_checked``). Writes metrics/export.json (parity and CPU latency). In
the training run's MLflow run it logs those numbers and the pyfunc model (``eyelip.release.pyfunc``),
registers it with its lineage and moves ``champion`` only when it beats the champion on the same
test data (``eyelip.release.registry``).
"""

import json
from pathlib import Path

import numpy as np

from eyelip import atomic, stage
from eyelip.data.fuse import FusedMasks
from eyelip.errors import DataError, EyelipError
from eyelip.model.checkpoint import check_fits, load_model
from eyelip.release.export import export_checked
from eyelip.inference.predictors import TorchPredictor
from eyelip.params import Params
from eyelip.release.registry import EvalSet, Lineage, publish
from eyelip.tracking.store import RUN_FILE, data_version, read_run_id
from eyelip.data.dataset import ResizedArrays, split_rows

MODEL, ONNX, TORCHSCRIPT = Path("models/model.pt"), Path("models/model.onnx"), Path("models/model.ts")
EVALUATE, METRICS = Path("metrics/evaluate.json"), Path("metrics/export.json")
PARITY_IMAGES = 64


def test_iou() -> float:
    if not EVALUATE.is_file():
        raise EyelipError(f"{EVALUATE}: not found; the registry gate needs the test IoU, run `dvc repro evaluate`")
    metrics = json.loads(EVALUATE.read_text())
    if not isinstance(metrics.get("iou"), (int, float)):
        raise EyelipError(f"{EVALUATE}: no numeric 'iou'; re-run `dvc repro evaluate`")
    return float(metrics["iou"])


def main(params: Params) -> None:
    repeats = params.export.latency_repeats
    iou = test_iou()  # checked first: no point exporting what cannot be gated
    run_id = read_run_id()
    if run_id is None:
        raise EyelipError(f"{RUN_FILE}: not found; run `dvc repro train` to create the MLflow run")
    model, ckpt = load_model(MODEL)
    arrays = ResizedArrays("data/resized")
    check_fits(ckpt, arrays, str(MODEL))
    rows = split_rows(arrays, "data/split", "test")
    if not len(rows):
        raise DataError("data/split/test.txt: empty; parity needs test images (raise split.test)")
    reference = TorchPredictor(MODEL)
    # target_parts and rule let `eyelip evaluate` rebuild the ground truth the model was trained on.
    meta = {"target_parts": reference.target_parts, "rule": reference.rule, "prior": reference.prior,
            "train_size": ckpt["train_size"], "epoch": ckpt.get("epoch"), "val_iou": ckpt.get("val_iou"),
            "model": ckpt["model"], "mlflow_run_id": run_id, "data_version": data_version()}
    summary = export_checked(model, reference, np.asarray(arrays.images[np.sort(rows[:PARITY_IMAGES])]), ONNX,
                             TORCHSCRIPT, reference.size, reference.targets, meta, reference.input_size, repeats)
    summary.update(onnx_bytes=ONNX.stat().st_size, torchscript_bytes=TORCHSCRIPT.stat().st_size)
    atomic.write_json(METRICS, summary)
    for fmt, result in summary["parity"].items():
        print(f"parity {fmt}: max |prob diff| {result['max_abs_prob_diff']:.2e}, identical mask pixels "
              f"{result['identical_mask_fraction']:.6f} on {result['images']} test images")
    for fmt, ms in summary["latency_ms"].items():
        print(f"latency {fmt}: " + ", ".join(f"batch {k[1:]} {v:.1f} ms" for k, v in ms.items()))

    test = EvalSet(arrays.images, arrays.masks, rows, [arrays.ids[r] for r in rows], FusedMasks("data/fused"))
    lineage = Lineage.of(reference, data_version=meta["data_version"], test_split=test.digest(),
                         test_images=len(rows))
    publish(params, ONNX, METRICS, summary, iou, lineage, test)


if __name__ == "__main__":
    stage.run("export", main)
