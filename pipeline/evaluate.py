"""Stage `evaluate`: models/model.pt on the test split; metrics for DVC, the same numbers in MLflow.

Writes metrics/evaluate.json (IoU at the model size and at the native mask resolution, Dice,
precision, recall, accuracy and its all-background baseline), metrics/evaluate_thresholds.csv,
metrics/evaluate_per_image.csv and PNGs (IoU by threshold, per-image histogram, best/worst
overlays), and adds them as ``test_*`` metrics and artifacts to the training stage's MLflow run.
"""

from pathlib import Path

from eyelip import atomic, stage
from eyelip.evaluation.evaluate import TestSplit, evaluate, write_reports
from eyelip.inference.predictors import TorchPredictor
from eyelip.params.core import View
from eyelip.params.runtime import RuntimeParams
from eyelip.params.tracking import TrackingParams
from eyelip.tracking.store import resume_run

MODEL, METRICS, REPORTS = Path("models/model.pt"), Path("metrics/evaluate.json"), Path("metrics/evaluate")
BATCH_SIZE = 32


class Params(View):
    """The sections of params.yaml this stage reads."""

    runtime: RuntimeParams = RuntimeParams()
    tracking: TrackingParams = TrackingParams()


def main(params: Params) -> None:
    predictor, test = TorchPredictor(MODEL), TestSplit.open()
    predictor.spec.check_fits(test.spec, str(MODEL))
    result = evaluate(predictor, test.batches(BATCH_SIZE))
    atomic.write_json(METRICS, result.metrics)
    artifacts = [METRICS, *write_reports(result, REPORTS)]
    print(result.table())

    import mlflow

    with resume_run(params):  # the training run; ends it, even on error
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in result.metrics.items()})
        for path in artifacts:
            mlflow.log_artifact(str(path))


if __name__ == "__main__":
    stage.run("evaluate", main, Params)
