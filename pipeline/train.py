"""Stage `train`: U-Net on the train split, early-stopped on val IoU; tracked in MLflow and DVC.

Reads the targets, sizes and prior from the data (data/resized/meta.json), the rest from params.
Writes models/model.pt (the best epoch by val IoU; the last epoch with `split.val: 0`),
models/resume.pt (persisted: resumes an interrupted run), models/run.json (the MLflow run that
evaluate and export add to), metrics/train.json, metrics/train_history.csv and
metrics/train_curves.png.

With `train.nproc: N` > 1 the stage re-runs itself under `torchrun --standalone --nproc-per-node=N`
(DistributedDataParallel, see eyelip.training.distributed); under torchrun, only rank 0 writes and logs.
"""

import sys
from pathlib import Path

from eyelip import atomic, stage
from eyelip.data.dataset import ResizedArrays, split_rows, to_input
from eyelip.model.checkpoint import load_model
from eyelip.params.core import View
from eyelip.params.model import ModelParams
from eyelip.params.runtime import RuntimeParams
from eyelip.params.tracking import TrackingParams
from eyelip.params.train import TrainParams
from eyelip.tracking.plots import rows_csv, training_curves
from eyelip.tracking.store import TrackedRun
from eyelip.training import distributed
from eyelip.training.loop import TrainConfig, fit

MODEL, RESUME = Path("models/model.pt"), Path("models/resume.pt")
OLD_RESUME = Path("models/checkpoint.pt")  # where eyelip kept the resume state before its format was versioned
HISTORY, CURVES = Path("metrics/train_history.csv"), Path("metrics/train_curves.png")


class Params(View):
    """The sections of params.yaml this stage reads. Its new MLflow run logs the file's every key as written
    and the defaults of these sections for keys left out (``File.flat``): not those of other sections,
    whose schema this stage does not depend on (params.yaml writes every key, so none is missing there)."""

    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    runtime: RuntimeParams = RuntimeParams()
    tracking: TrackingParams = TrackingParams()


def main(params: Params) -> None:
    cfg = TrainConfig.from_params(params)
    if cfg.nproc > 1 and not distributed.launched():
        sys.exit(distributed.relaunch(cfg.nproc, __file__))
    dist = distributed.init(params.runtime.distributed, params.runtime.device)
    arrays = ResizedArrays("data/resized")
    data = arrays.spec
    train_rows, val_rows = split_rows(arrays, "data/split", "train"), split_rows(arrays, "data/split", "val")
    if dist.main:
        print(
            f"training on {len(train_rows)} images, validating on {len(val_rows)} "
            f"({data.input_size} px in, {data.size} px out, targets: {', '.join(data.targets)}"
            + (f", auxiliary: {', '.join(data.aux_targets)}" if data.aux_targets else "")
            + f", {dist.world} process(es))"
        )
        if OLD_RESUME.exists():
            print(f"{OLD_RESUME}: an older eyelip's resume state, not read (it is {RESUME} now); delete it")
    run = TrackedRun(params)
    summary = fit(
        cfg,
        arrays,
        train_rows,
        val_rows,
        MODEL,
        RESUME,
        cfg.fingerprint(run.data_version, dist.world),
        on_epoch=run.log_epoch,
        on_start=run.start,
        dist=dist,
    )
    dist.close()
    if not dist.main:
        return
    history = summary.pop("history")
    summary.pop("run_id")
    atomic.write_json("metrics/train.json", summary)
    run.log_summary(summary)
    atomic.write_text(HISTORY, rows_csv(history))
    training_curves(history, CURVES, summary["best_epoch"])
    model, _ = load_model(MODEL)
    example = (val_rows if len(val_rows) else train_rows)[:2]
    run.finish([HISTORY, CURVES], model, to_input(arrays.images[example]).numpy())
    if summary["best_val_iou"] is None:
        print(f"no validation faces (split.val: 0): kept the last epoch, {summary['best_epoch']} -> {MODEL}")
    else:
        print(f"best val IoU {summary['best_val_iou']:.4f} at epoch {summary['best_epoch']} -> {MODEL}")


if __name__ == "__main__":
    stage.run("train", main, Params)
