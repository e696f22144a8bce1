"""``eyelip predict`` on photos of different sizes (the synthetic faces), with an exported ONNX model."""

from __future__ import annotations

import io
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
from eyelip.inference.predict import (
    collect_inputs,
    overlay,
    predict_files,
    resize_probabilities,
    run_predict,
    upright_size,
)
from eyelip.inference.predictors import OnnxPredictor, load_predictor
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


def test_no_overlay_writes_the_same_masks_and_nothing_else(synthetic: Path, tmp_path: Path) -> None:
    two = onnx_model(tmp_path / "two.onnx", ["eyes", "lips"])
    photos = [str(photo(synthetic, 3)), str(photo(synthetic, 2001))]
    run_predict(photos, str(two), tmp_path / "both", batch_size=1)
    proc = eyelip(*photos, "--model", str(two), "--out", str(tmp_path / "masks"), "--no-overlay")
    assert proc.returncode == 0, proc.stderr
    assert "-> 2 masks each in" in proc.stdout
    masks = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert masks == ["2001_eyes_mask.png", "2001_lips_mask.png", "3_eyes_mask.png", "3_lips_mask.png"]
    for name in masks:
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "masks" / name)), np.asarray(Image.open(tmp_path / "both" / name))
        )


def test_overlay_blends_each_target_in_turn_and_rounds_once() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    masks = rng.random((2, 40, 30)) < [[[0.3]], [[0.5]]]  # overlapping: the second target on top
    expected = pixels.astype(np.float32)  # the rule on the whole image, in float, rounded at the end
    for mask, colour in zip(masks, [(255, 0, 0), (0, 200, 255)]):
        expected[mask] = 0.55 * expected[mask] + 0.45 * np.array(colour, dtype=np.float32)
    result = np.asarray(overlay(Image.fromarray(pixels), masks))
    assert np.array_equal(result, expected.round().astype(np.uint8))
    assert np.array_equal(result[~masks.any(axis=0)], pixels[~masks.any(axis=0)])


@pytest.mark.parametrize(("fmt", "orientation"), [("JPEG", None), ("JPEG", 6), ("JPEG", 8), ("PNG", 5), ("WEBP", 7)])
def test_upright_size_is_the_decoded_photos(fmt: str, orientation: int | None) -> None:
    image = Image.fromarray(np.zeros((20, 36, 3), np.uint8))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, fmt, exif=exif)
    height, width = decode_image(buffer.getvalue(), None, "x").shape[:2]
    assert upright_size(buffer.getvalue()) == (width, height) == ((20, 36) if orientation else (36, 20))


def test_a_write_that_fails_in_a_worker_stops_the_run(model: Path, synthetic: Path, tmp_path: Path) -> None:
    long = tmp_path / f"{'a' * 245}.jpg"  # its mask's name fits, the temporary name it is written under does not
    shutil.copy(photo(synthetic, 3), long)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EyelipError, match=rf"{long.stem}_mask.png: cannot write \(.*\); pass a writable --out folder"):
        predict_files(load_predictor(model), [photo(synthetic, 2001), long], out, 0.5, batch_size=1, workers=2)
    assert sorted(p.name for p in out.iterdir()) == ["2001_mask.png", "2001_overlay.png"]  # the photo before it
