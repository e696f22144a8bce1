"""The registered model as an MLflow ``python_function``: photo bytes in, mask PNGs at the photo's size out.

Input: a DataFrame with one column ``image`` of encoded image bytes (JPEG, PNG, WebP, ... of any
size); over HTTP (``mlflow models serve``) the bytes go base64-encoded, e.g.
``{"dataframe_split": {"columns": ["image"], "data": [["<base64>"]]}}``. Output: one row per photo,
one column ``mask_<target>`` per target holding a PNG (mode L, 255 = inside) at the photo's own
width x height. Parameter ``threshold`` (default 0.5). Inside it is exactly ``eyelip predict``:
the photo decoded by ``predict.decode_photo`` as ``--no-overlay`` does (with the model's prior), the exported
ONNX model, probabilities resized bilinearly to the photo's size (``predict.resize_probabilities``),
then thresholded. The ONNX file is an artifact of the logged model and this package travels in its
``code/`` folder, so loading needs neither the training stack nor an installed eyelip.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from PIL import Image

from eyelip.errors import EyelipError
from eyelip.inference.predict import decode_photo, mask_image, resize_probabilities

INPUT, THRESHOLD = "image", 0.5


def mask_columns(targets: list[str]) -> list[str]:
    return [f"mask_{target}" for target in targets]


def signature(targets: list[str]) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec("binary", INPUT)]),
        outputs=Schema([ColSpec("binary", column) for column in mask_columns(targets)]),
        params=ParamSchema([ParamSpec("threshold", "double", THRESHOLD)]),
    )


def png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    mask_image(mask).save(buffer, format="PNG")
    return buffer.getvalue()


class EyelipModel(mlflow.pyfunc.PythonModel):
    """The exported ONNX model with eyelip's preprocessing and mask rule (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        from eyelip.inference.predictors import OnnxPredictor

        self.predictor = OnnxPredictor(context.artifacts["onnx"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Masks for each row; a bad request (an unreadable image, a wrong column or threshold) raises an
        MlflowException that `mlflow models serve` answers with HTTP 400 and a message naming the row and
        what is wrong with it (any other exception would be a generic 400 with the reason in a traceback)."""
        try:
            return self._masks(model_input, params)
        except EyelipError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc

    def _masks(self, model_input: pd.DataFrame, params: dict[str, Any] | None) -> pd.DataFrame:
        threshold = float((params or {}).get("threshold", THRESHOLD))
        if not 0.0 < threshold < 1.0:
            raise EyelipError(f"threshold must be between 0 and 1 (exclusive), got {threshold}")
        if INPUT not in model_input:
            raise EyelipError(f"expected a column {INPUT!r} of image bytes, got columns {list(model_input.columns)}")
        predictor, rows = self.predictor, []
        for index, data in enumerate(model_input[INPUT]):
            where = f"{INPUT}[{index}]"  # the request's row: the client knows its images by position
            model_input, size = decode_photo(bytes(data), predictor.input_size, predictor.prior, where, full=False)
            masks = resize_probabilities(predictor(model_input[None])[0], *size) >= threshold
            rows.append([png(mask) for mask in masks])
        return pd.DataFrame(rows, columns=mask_columns(predictor.targets))


def log_pyfunc(onnx_path: str | Path, targets: list[str], input_example: bytes, name: str = "pyfunc") -> Any:
    """Log the pyfunc model in the active run; returns MLflow's ModelInfo (``model_uri`` for registering)."""
    import onnxruntime

    import eyelip

    requirements = [
        f"mlflow=={mlflow.__version__}",
        f"onnxruntime=={onnxruntime.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"pillow=={Image.__version__}",
        "tqdm",
    ]
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=EyelipModel(),
        artifacts={"onnx": str(onnx_path)},
        code_paths=[str(Path(eyelip.__file__).parent)],
        signature=signature(targets),
        input_example=pd.DataFrame({INPUT: [input_example]}),
        pip_requirements=requirements,
    )
