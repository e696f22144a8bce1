"""The registered model as an MLflow pyfunc: `models:/<name>@champion` loads in a real SQLite store and
gives, for photos of any size, the masks `eyelip predict` gives; the JSON protocol of `mlflow models serve`
too (in process, and with the real server in a slow test)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image
from servers import free_port, wait_until_answers

from eyelip.data.preprocess import decode_input
from eyelip.data.synthetic import generate_sample
from eyelip.inference.predict import resize_probabilities
from eyelip.inference.predictors import OnnxPredictor
from eyelip.model.spec import ModelSpec
from eyelip.model.unet import build_model
from eyelip.release.export import export_onnx
from eyelip.release.pyfunc import log_pyfunc

SIZE, NAME = 32, "eyelip-pyfunc"
TARGETS = {"eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny two-target ONNX model logged as the pyfunc, registered and aliased champion; photos from
    the synthetic sample re-encoded at other sizes (a JPEG and a PNG)."""
    root = tmp_path_factory.mktemp("pyfunc")
    generate_sample(root / "sample.zip", n=2, seed=0, image_size=96, mask_size=96)
    with zipfile.ZipFile(root / "sample.zip") as zf:
        face = Image.open(io.BytesIO(zf.read("CelebAMask-HQ/CelebA-HQ-img/1.jpg"))).convert("RGB")
    photos = []
    for size, fmt in (((90, 70), "JPEG"), ((41, 53), "PNG")):
        buffer = io.BytesIO()
        face.resize(size).save(buffer, format=fmt)
        photos.append(buffer.getvalue())
    torch.manual_seed(0)
    model = build_model({"base_width": 4, "depth": 2}, out_channels=len(TARGETS)).eval()
    with torch.no_grad():  # centre the logits on this face, so that masks are neither empty nor full
        x = torch.from_numpy(decode_input(photos[0], SIZE, "photo").transpose(2, 0, 1)[None] / np.float32(255))
        model.head.bias -= model(x).flatten(2).median(2).values[0]
    onnx_path = root / "model.onnx"
    export_onnx(model, onnx_path, ModelSpec(TARGETS, SIZE), {})
    uri = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("pyfunc", (root / "mlruns").as_uri()))
    with mlflow.start_run():
        info = log_pyfunc(onnx_path, list(TARGETS), photos[0])
    version = mlflow.register_model(info.model_uri, NAME)
    MlflowClient().set_registered_model_alias(NAME, "champion", version.version)
    yield {"root": root, "uri": uri, "onnx": onnx_path, "photos": photos}
    mlflow.set_tracking_uri(old or "")


def expected_masks(onnx_path: Path, photo: bytes, threshold: float = 0.5) -> np.ndarray:
    """What `eyelip predict` computes: decode_input, the ONNX model, resize_probabilities, threshold."""
    predictor = OnnxPredictor(onnx_path)
    probs = predictor(decode_input(photo, predictor.input_size, "photo", predictor.prior)[None])[0]
    width, height = Image.open(io.BytesIO(photo)).size
    return resize_probabilities(probs, width, height) >= threshold


def decoded(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.mode == "L"
    return np.asarray(image) == 255


def test_champion_loads_and_predicts_masks_at_each_photos_size(served: dict) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    schema = model.metadata.signature
    assert schema.inputs.to_dict() == [{"type": "binary", "name": "image", "required": True}]
    assert [c["name"] for c in schema.outputs.to_dict()] == ["mask_eyes", "mask_lips"]
    assert schema.params.to_dict()[0]["name"] == "threshold"
    out = model.predict(pd.DataFrame({"image": served["photos"]}))
    assert list(out.columns) == ["mask_eyes", "mask_lips"] and len(out) == 2
    for (_, row), photo in zip(out.iterrows(), served["photos"]):
        expected = expected_masks(served["onnx"], photo)
        masks = np.stack([decoded(row["mask_eyes"]), decoded(row["mask_lips"])])
        assert masks.shape[1:] == Image.open(io.BytesIO(photo)).size[::-1]
        np.testing.assert_array_equal(masks, expected)
        assert 0 < masks.mean() < 1  # neither empty nor full: the comparison means something
    strict = model.predict(pd.DataFrame({"image": served["photos"][:1]}), params={"threshold": 0.9})
    assert decoded(strict["mask_eyes"][0]).sum() < decoded(out["mask_eyes"][0]).sum()


def serving_request(photo: bytes) -> str:
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(photo).decode("ascii")]]}})


def masks_from_response(body: str | bytes) -> np.ndarray:
    (row,) = json.loads(body)["predictions"]
    return np.stack([decoded(base64.b64decode(row[c])) for c in ("mask_eyes", "mask_lips")])


# A request's bad images: what the client sent, and what the answer says is wrong with it.
BAD_IMAGES = [
    (lambda photo: photo[: len(photo) // 2], "corrupt or truncated image ("),
    (lambda photo: b"plain text, not a photo", "not a readable image (Pillow recognises no image format"),
]


def test_the_serving_json_protocol(served: dict) -> None:
    """The scoring server's own request handler: base64 image in, base64 PNG masks out; a bad image is the
    client's error (HTTP 400) and its message says what is wrong with that image."""
    from mlflow.pyfunc.scoring_server import invocations

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    photo = served["photos"][0]
    response = invocations(serving_request(photo), "application/json", model, model.metadata.get_input_schema())
    assert response.status == 200, response.response
    np.testing.assert_array_equal(masks_from_response(response.response), expected_masks(served["onnx"], photo))
    for bad, reason in BAD_IMAGES:
        with pytest.raises(MlflowException) as caught:
            invocations(serving_request(bad(photo)), "application/json", model, model.metadata.get_input_schema())
        assert caught.value.get_http_status_code() == 400
        assert f"image[0]: {reason}" in caught.value.message and "on_error" not in caught.value.message


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_photo(served: dict, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": served["uri"]}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{NAME}@champion",
            "--env-manager",
            "local",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/ping", proc, tmp_path / "serve.log")
        photo = served["photos"][1]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=serving_request(photo).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            masks = masks_from_response(response.read())
        np.testing.assert_array_equal(masks, expected_masks(served["onnx"], photo))
        bad, reason = BAD_IMAGES[0]
        request = urllib.request.Request(
            request.full_url, data=serving_request(bad(photo)).encode(), headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        body = json.loads(caught.value.read())
        assert caught.value.code == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
        assert f"image[0]: {reason}" in body["message"], body
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
