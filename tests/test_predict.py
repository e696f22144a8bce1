"""``eyelip predict`` on photos of different sizes (the synthetic faces), with an exported ONNX model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SYNTHETIC_PHOTO
from PIL import Image

from eyelip.data.preprocess import decode_image
from eyelip.errors import EyelipError
from eyelip.inference.predict import collect_inputs, resize_probabilities, run_predict
from eyelip.inference.predictors import OnnxPredictor
from eyelip.model.spec import ModelSpec
from eyelip.model.unet import build_model
from eyelip.release.export import export_onnx

EYELIP = Path(sys.executable).parent / "eyelip"  # the console script installed by `pip install -e .`
SIZE = 64


PARTS = {"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"], "eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}


def onnx_model(path: Path, targets: list[str]) -> Path:
    torch.manual_seed(0)
    model = build_model({"base_width": 4, "depth": 2}, out_channels=len(targets)).eval()
    export_onnx(model, path, ModelSpec({target: PARTS[target] for target in targets}, SIZE), {})
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_model(tmp_path_factory.mktemp("model") / "model.onnx", ["eyes_lips"])


def photo(faces: Path, sample_id: int) -> Path:
    return faces / "CelebA-HQ-img" / f"{sample_id}.jpg"


def eyelip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EYELIP), "predict", *args], capture_output=True, text=True, timeout=120)


def test_masks_and_overlays_have_each_photos_size(model: Path, synthetic: Path, tmp_path: Path) -> None:
    assert EYELIP.is_file(), "console script missing: run `pip install -e .`"
    proc = eyelip(str(photo(synthetic, 3)), str(photo(synthetic, 2001)), "--model", str(model), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "predicted 2 images" in proc.stdout
    for sample_id, size in SYNTHETIC_PHOTO.items():
        assert Image.open(photo(synthetic, sample_id)).size == (size, size)
        mask = Image.open(tmp_path / f"{sample_id}_mask.png")
        assert (mask.mode, mask.size) == ("L", (size, size))
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        over = Image.open(tmp_path / f"{sample_id}_overlay.png")
        assert (over.mode, over.size) == ("RGB", (size, size))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "2001_mask.png",
        "2001_overlay.png",
        "3_mask.png",
        "3_overlay.png",
    ]


def test_mask_is_the_thresholded_bilinear_upsampling(model: Path, synthetic: Path, tmp_path: Path) -> None:
    run_predict([str(photo(synthetic, 3))], str(model), tmp_path, threshold=0.5, batch_size=4)
    predictor = OnnxPredictor(model)
    probs = predictor(decode_image(photo(synthetic, 3).read_bytes(), SIZE, "3.jpg")[None])[0]
    expected = resize_probabilities(probs, SYNTHETIC_PHOTO[3], SYNTHETIC_PHOTO[3])[0] >= 0.5
    assert np.array_equal(np.asarray(Image.open(tmp_path / "3_mask.png")) == 255, expected)
    overlay = np.asarray(Image.open(tmp_path / "3_overlay.png")).astype(int)
    original = np.asarray(Image.open(photo(synthetic, 3)).convert("RGB")).astype(int)
    assert np.array_equal(overlay[~expected], original[~expected])  # only predicted pixels are tinted


def test_onnx_path_never_imports_torch(model: Path, synthetic: Path, tmp_path: Path) -> None:
    argv = ["predict", str(photo(synthetic, 3)), "--model", str(model), "--out", str(tmp_path)]
    script = f"import sys; sys.modules['torch'] = None; from eyelip.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_several_targets_write_one_mask_per_target(synthetic: Path, tmp_path: Path) -> None:
    two = onnx_model(tmp_path / "two.onnx", ["eyes", "lips"])
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photo(synthetic, 3), folder / "face.jpg")  # a copy in tmp_path: the folder input needs its own dir
    (folder / "notes.txt").write_text("not an image; skipped by suffix")
    run_predict([str(folder)], str(two), tmp_path / "out", threshold=0.5, batch_size=2)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "face_eyes_mask.png",
        "face_lips_mask.png",
        "face_overlay.png",
    ]


def test_duplicate_stems_are_refused(synthetic: Path, tmp_path: Path) -> None:
    (tmp_path / "3.png").write_bytes(b"")
    with pytest.raises(EyelipError, match="would both write 3_mask.png"):
        collect_inputs([str(photo(synthetic, 3)), str(tmp_path / "3.png")])


@pytest.mark.parametrize("case", ["text_as_jpg", "bad_model", "empty_folder", "missing_path"])
def test_bad_inputs_fail_with_a_clear_message(case: str, model: Path, synthetic: Path, tmp_path: Path) -> None:
    good, out = str(photo(synthetic, 3)), str(tmp_path / "out")
    if case == "text_as_jpg":
        (tmp_path / "x.jpg").write_text("this is not a photo")
        args, expected = [good, str(tmp_path / "x.jpg"), "--model", str(model)], "x.jpg: not a readable image"
    elif case == "bad_model":
        (tmp_path / "model.onnx").write_bytes(b"\x00garbage")
        args, expected = [good, "--model", str(tmp_path / "model.onnx")], "model.onnx: not a readable ONNX model"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        args, expected = [str(tmp_path / "empty"), "--model", str(model)], "empty: folder has no images"
    else:
        args, expected = [str(tmp_path / "nope.jpg"), "--model", str(model)], "nope.jpg: no such file or folder"
    proc = eyelip(*args, "--out", out)
    assert proc.returncode == 1
    assert "eyelip predict: error:" in proc.stderr and expected in proc.stderr
    assert "Traceback" not in proc.stderr
