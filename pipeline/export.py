"""Stage `export`: models/model.onnx and models/model.ts, checked against PyTorch, then the registry gate.

Parity on up to 64 test-split images must hold for both exports, or neither file is published
(``eyelip.release.export.export_checked``). models/model.int8.onnx, quantized with up to 32 training
images for calibration, is scored on the test split as the evaluate stage scores the model: its IoU
cost is in metrics/export.json (``int8``) with the parity and CPU latency of every format. In
the training run's MLflow run it logs those numbers and the pyfunc model (``eyelip.release.pyfunc``),
registers it with its lineage and moves ``champion`` only when it beats the champion on the same
test data (``eyelip.release.registry``).
"""

import json
from pathlib import Path

import numpy as np

from eyelip import atomic, stage
from eyelip.data.dataset import split_rows
from eyelip.errors import DataError, EyelipError
from eyelip.evaluation.evaluate import TestSplit, evaluate
from eyelip.inference.predictors import OnnxPredictor, TorchPredictor
from eyelip.model.checkpoint import load_model
from eyelip.params.core import View
from eyelip.params.export import ExportParams
from eyelip.params.runtime import RuntimeParams
from eyelip.params.tracking import TrackingParams
from eyelip.release.export import export_checked
from eyelip.release.registry import Lineage, publish
from eyelip.tracking.store import RUN_FILE, data_version, read_run_id

MODEL, ONNX, TORCHSCRIPT = Path("models/model.pt"), Path("models/model.onnx"), Path("models/model.ts")
INT8 = Path("models/model.int8.onnx")
EVALUATE, METRICS = Path("metrics/evaluate.json"), Path("metrics/export.json")
PARITY_IMAGES, CALIBRATION_IMAGES = 64, 32
SCORES = ("iou", "iou_native")  # of metrics/evaluate.json, compared with the int8 model's


def test_scores() -> dict[str, float]:
    if not EVALUATE.is_file():
        raise EyelipError(f"{EVALUATE}: not found; the registry gate needs the test IoU, run `dvc repro evaluate`")
    metrics = json.loads(EVALUATE.read_text())
    for key in SCORES:
        if not isinstance(metrics.get(key), (int, float)):
            raise EyelipError(f"{EVALUATE}: no numeric {key!r}; re-run `dvc repro evaluate`")
    return {key: float(metrics[key]) for key in SCORES}


class Params(View):
    """The sections of params.yaml this stage reads."""

    export: ExportParams = ExportParams()
    runtime: RuntimeParams = RuntimeParams()
    tracking: TrackingParams = TrackingParams()


def main(params: Params) -> None:
    repeats = params.export.latency_repeats
    scores = test_scores()  # checked first: no point exporting what cannot be gated
    run_id = read_run_id()
    if run_id is None:
        raise EyelipError(f"{RUN_FILE}: not found; run `dvc repro train` to create the MLflow run")
    model, file = load_model(MODEL)
    test = TestSplit.open()
    file.spec.check_fits(test.spec, str(MODEL))
    if not len(test):
        raise DataError("data/split/test.txt: empty; parity needs test images (raise split.test)")
    # With the model's contract (its spec), where it came from.
    meta = {"epoch": file.epoch, "val_iou": file.val_iou, "mlflow_run_id": run_id, "data_version": data_version()}
    train_rows = np.sort(split_rows(test.arrays, "data/split", "train")[:CALIBRATION_IMAGES])
    calibration = np.asarray(test.arrays.images[train_rows])
    summary = export_checked(
        model,
        TorchPredictor(MODEL),
        test.inputs(PARITY_IMAGES),
        ONNX,
        TORCHSCRIPT,
        file.spec,
        meta,
        repeats,
        int8=(INT8, calibration),
    )
    int8 = evaluate(OnnxPredictor(INT8), test.batches(32)).metrics
    summary["int8"] = {
        "calibration_images": len(calibration),
        **{f"{key}_model": value for key, value in scores.items()},
        **{key: float(int8[key]) for key in SCORES},
        **{f"{key}_cost": round(value - float(int8[key]), 6) for key, value in scores.items()},
    }
    summary.update(
        onnx_bytes=ONNX.stat().st_size, torchscript_bytes=TORCHSCRIPT.stat().st_size, int8_bytes=INT8.stat().st_size
    )
    atomic.write_json(METRICS, summary)
    for fmt, result in summary["parity"].items():
        print(
            f"parity {fmt}: max |prob diff| {result['max_abs_prob_diff']:.2e}, identical mask pixels "
            f"{result['identical_mask_fraction']:.6f} on {result['images']} test images"
        )
    for fmt, ms in summary["latency_ms"].items():
        print(f"latency {fmt}: " + ", ".join(f"batch {k[1:]} {v:.1f} ms" for k, v in ms.items()))
    print(
        f"int8 ONNX ({INT8}): test IoU {summary['int8']['iou']:.4f} (model {scores['iou']:.4f}), at the native "
        f"size {summary['int8']['iou_native']:.4f} (model {scores['iou_native']:.4f})"
    )

    lineage = Lineage(file.spec, data_version=meta["data_version"], test_split=test.digest(), test_images=len(test))
    publish(params, ONNX, METRICS, summary, scores["iou"], lineage, test)


if __name__ == "__main__":
    stage.run("export", main, Params)
