"""Photos as users have them: EXIF orientation, any pixel mode, photos without a face, unreadable
files among good ones, and an output folder that cannot be written."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eyelip.cli import main
from eyelip.data.fuse import fuse_dataset
from eyelip.data.preprocess import decode_image, decode_input, decode_mask
from eyelip.data.prior import NoFaceWarning
from eyelip.data.resize import resize_dataset
from eyelip.data.source import Source
from eyelip.data.synthetic import generate_sample, render_face
from eyelip.errors import EyelipError
from eyelip.inference.predict import resize_probabilities, run_predict, save_png
from eyelip.inference.predictors import OnnxPredictor
from eyelip.model.spec import ModelSpec
from eyelip.model.unet import build_model
from eyelip.release.export import export_onnx

EYELIP = Path(sys.executable).parent / "eyelip"
SIZE = 64
ORIENTATION = 0x0112
# EXIF orientation -> how the stored pixels relate to the upright photo (numpy on (H, W, C) arrays):
# a viewer applies the inverse of each to show the photo upright.
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: np.rot90(a, 2),
    4: lambda a: a[::-1],
    5: lambda a: np.rot90(a[:, ::-1], 1),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: np.rot90(a[:, ::-1], -1),
    8: lambda a: np.rot90(a, -1),
}


def face(size: int, seed: int = 0) -> np.ndarray:
    """A synthetic face (uint8 RGB), cropped to a portrait photo: 3/4 as wide as tall."""
    image, _ = render_face(np.random.default_rng([seed, 7]), size, size)
    margin = size // 8
    return np.ascontiguousarray(image[:, margin : size - margin])


def encode(pixels: np.ndarray | Image.Image, fmt: str, orientation: int | None = None, **options) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(np.ascontiguousarray(pixels))
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        options["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def onnx_model(path: Path, prior: str = "none") -> Path:
    torch.manual_seed(0)
    in_channels = 3 if prior == "none" else 5
    model = build_model({"base_width": 4, "depth": 2}, out_channels=1, in_channels=in_channels).eval()
    export_onnx(model, path, ModelSpec({"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}, SIZE, prior=prior), {})
    return path


def eyelip_predict(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``eyelip predict`` as a user runs it; ``prelude`` runs first in the same process."""
    script = f"{prelude}\nimport sys\nfrom eyelip.cli import main\nsys.exit(main(['predict', *{list(args)!r}]))"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_model(tmp_path_factory.mktemp("model") / "model.onnx")


# --- orientation -----------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_every_exif_orientation_decodes_upright(orientation: int) -> None:
    upright = face(96)
    data = encode(STORED[orientation](upright), "PNG", orientation)  # lossless: exact pixels expected
    np.testing.assert_array_equal(decode_image(data, None, "x.png"), upright)
    expected = np.asarray(Image.fromarray(upright).resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_image(data, 32, "x.png"), expected)  # turned before it is resized


def test_a_reduced_jpeg_decode_is_turned_too() -> None:
    """A large JPEG decodes at reduced scale (draft); the orientation applies to that decode as well."""
    upright = face(512)
    turned = decode_image(encode(np.rot90(upright, 1), "JPEG", 6, quality=95), SIZE, "phone.jpg").astype(int)
    plain = decode_image(encode(upright, "JPEG", quality=95), SIZE, "plain.jpg").astype(int)
    sideways = decode_image(encode(np.rot90(upright, 1), "JPEG", quality=95), SIZE, "x.jpg").astype(int)
    assert np.abs(turned - plain).mean() < 2  # JPEG noise only
    assert np.abs(sideways - plain).mean() > 10  # what the model saw before: the test notices a missed turn


def test_a_rotated_phone_jpeg_gets_the_upright_photos_mask(model: Path, tmp_path: Path) -> None:
    """A portrait photo stored sideways with orientation 6 (as phones write them): its mask and overlay
    have the photo's displayed size, and the mask is the upright photo's, pixel for pixel."""
    upright = face(160)  # 120 x 160: small enough that the JPEG decodes at full scale (no draft), so exact
    phone = tmp_path / "phone.jpg"
    phone.write_bytes(encode(np.rot90(upright, 1), "JPEG", 6, quality=90))
    assert Image.open(phone).size == (160, 120)  # stored landscape
    # The reference: the same stored pixels decoded by PIL alone and turned by numpy, saved losslessly.
    reference = tmp_path / "upright.png"
    Image.fromarray(np.rot90(np.asarray(Image.open(phone).convert("RGB")), -1)).save(reference)
    # A threshold that splits the photo, so the masks compared are not all empty or all full.
    probs = OnnxPredictor(model)(decode_image(reference.read_bytes(), SIZE, "upright.png")[None])[0]
    threshold = float(np.median(resize_probabilities(probs, 120, 160)))
    run_predict([str(phone), str(reference)], str(model), tmp_path / "out", threshold=threshold)

    mask = np.asarray(Image.open(tmp_path / "out" / "phone_mask.png"))
    assert mask.shape == (160, 120)  # the displayed size, portrait
    assert 0.2 < (mask == 255).mean() < 0.8
    np.testing.assert_array_equal(mask, np.asarray(Image.open(tmp_path / "out" / "upright_mask.png")))
    assert Image.open(tmp_path / "out" / "phone_overlay.png").size == (120, 160)


def test_a_mask_with_an_orientation_tag_is_turned_like_its_photo() -> None:
    upright = np.zeros((40, 30), dtype=np.uint8)
    upright[5:10, 20:25] = 255
    data = encode(np.rot90(upright, 1), "PNG", 6)
    np.testing.assert_array_equal(decode_mask(data, "m.png"), upright > 0)


# --- pixel modes -----------------------------------------------------------------------------


def test_grey_palette_and_bilevel_images_become_rgb() -> None:
    pixels = face(64)
    grey = np.asarray(Image.fromarray(pixels).convert("L"))
    np.testing.assert_array_equal(decode_image(encode(grey, "PNG"), None, "g.png"), np.repeat(grey[..., None], 3, 2))
    palette = Image.fromarray(pixels).quantize(32)
    np.testing.assert_array_equal(
        decode_image(encode(palette, "PNG"), None, "p.png"), np.asarray(palette.convert("RGB"))
    )
    bilevel = Image.fromarray(grey).convert("1")
    assert set(np.unique(decode_image(encode(bilevel, "PNG"), None, "b.png"))) == {0, 255}
    grey_jpeg = decode_image(encode(grey, "JPEG", quality=95), 16, "g.jpg")  # a grey JPEG, draft-decoded
    assert grey_jpeg.shape == (16, 16, 3) and (grey_jpeg[..., 0] == grey_jpeg[..., 2]).all()


def test_16_bit_grey_is_scaled_not_clipped_to_white() -> None:
    wide = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    data = encode(Image.fromarray(wide), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # PIL keeps the 16 bits
    decoded = decode_image(data, None, "wide.png")
    np.testing.assert_array_equal(decoded[..., 1], np.round(wide / 257).astype(np.uint8))
    assert decoded.min() == 0 and decoded.max() == 255


def test_alpha_is_dropped_not_blended_into_black() -> None:
    pixels = face(64)
    transparent = Image.fromarray(np.dstack([pixels, np.zeros(pixels.shape[:2], np.uint8)]), "RGBA")
    np.testing.assert_array_equal(decode_image(encode(transparent, "PNG"), None, "t.png"), pixels)
    grey = np.asarray(Image.fromarray(pixels).convert("L"))
    grey_alpha = Image.fromarray(np.dstack([grey, np.zeros_like(grey)]), "LA")
    np.testing.assert_array_equal(decode_image(encode(grey_alpha, "PNG"), None, "la.png")[..., 0], grey)
    palette = Image.fromarray(pixels).quantize(32)
    keyed = encode(palette, "PNG", transparency=int(np.asarray(palette)[0, 0]))  # the background colour keyed out
    np.testing.assert_array_equal(decode_image(keyed, None, "k.png"), np.asarray(palette.convert("RGB")))


def test_cmyk_jpeg_becomes_the_same_colours() -> None:
    pixels = face(128)
    data = encode(Image.fromarray(pixels).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert np.abs(decode_image(data, None, "c.jpg").astype(int) - pixels).mean() < 3
    assert decode_image(data, 32, "c.jpg").shape == (32, 32, 3)


# --- unreadable photos, unwritable output ----------------------------------------------------


def test_one_unreadable_photo_does_not_stop_the_others(model: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    good = encode(face(96), "JPEG")
    (photos / "a_good.jpg").write_bytes(good)
    (photos / "b_text.jpg").write_text("this is not a photo")
    (photos / "c_truncated.jpg").write_bytes(good[: len(good) // 2])
    (photos / "d_good.png").write_bytes(encode(face(80, seed=1), "PNG"))
    proc = eyelip_predict(str(photos), "--model", str(model), "--out", str(tmp_path / "out"))

    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_good_mask.png",
        "a_good_overlay.png",
        "d_good_mask.png",
        "d_good_overlay.png",
    ]
    assert "predicted 2 images" in proc.stdout
    lines = proc.stderr.splitlines()
    for reason in (
        "b_text.jpg: not a readable image (Pillow recognises no image format in it",
        "c_truncated.jpg: corrupt or truncated image (image file is truncated",
    ):  # each with its reason
        assert any(f"skipped {photos / reason}" in line for line in lines), proc.stderr
    assert "BytesIO" not in proc.stderr and "pass only image files" not in proc.stderr
    assert lines[-1] == (
        f"eyelip predict: error: 2 of 4 photos could not be read (each reported above with its "
        f"reason); the masks of the other 2 are in {tmp_path / 'out'}"
    )


def test_no_photo_read_leaves_no_output_folder(model: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("this is not a photo")
    out = tmp_path / "new" / "out"
    proc = eyelip_predict(str(tmp_path / "notes.jpg"), "--model", str(model), "--out", str(out))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "eyelip predict: error: 1 of 1 photos could not be read (each reported "
        "above with its reason); nothing was written"
    )
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "kept"  # a folder the user made stays, empty or not
    existing.mkdir()
    assert eyelip_predict(str(tmp_path / "notes.jpg"), "--model", str(model), "--out", str(existing)).returncode == 1
    assert existing.is_dir()


@pytest.mark.parametrize("case", ["a_file", "under_a_file", "read_only"])
def test_an_unwritable_out_is_a_one_line_error(case: str, model: Path, tmp_path: Path) -> None:
    photo = tmp_path / "face.jpg"
    photo.write_bytes(encode(face(96), "JPEG"))
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    if case == "read_only":
        out = tmp_path / "locked"
        out.mkdir(mode=0o500)
        if os.geteuid() == 0:  # root writes through permissions: take a folder nobody can write in
            out = Path("/proc/self")
    else:
        out = blocker if case == "a_file" else blocker / "masks"
    proc = eyelip_predict(str(photo), "--model", str(model), "--out", str(out))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"eyelip predict: error: {out}: cannot write the output folder there (")
    assert proc.stderr.rstrip().endswith("pass a writable --out folder") and proc.stderr.count("\n") == 1


def test_a_failed_write_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(EyelipError, match=r"taken/x_mask.png: cannot write \(.*\); pass a writable --out folder"):
        save_png(Image.new("L", (4, 4)), tmp_path / "taken" / "x_mask.png")


# --- the face-mesh prior: no face, and no mediapipe ------------------------------------------

NO_MEDIAPIPE = "import sys; sys.modules['mediapipe'] = None"  # as if `eyelip[prior]` were not installed


def test_a_prior_model_without_mediapipe_stops_at_once_naming_the_extra(tmp_path: Path) -> None:
    prior_model = onnx_model(tmp_path / "prior.onnx", "facemesh")
    photo = tmp_path / "face.jpg"
    photo.write_bytes(encode(face(96), "JPEG"))
    proc = eyelip_predict(str(photo), "--model", str(prior_model), "--out", str(tmp_path / "out"), prelude=NO_MEDIAPIPE)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr == (
        f"eyelip predict: error: {prior_model}: the face-mesh prior 'facemesh' needs mediapipe, "
        f"which is not installed; pip install 'eyelip[prior]' (Python 3.11 or 3.12)\n"
    )
    assert not (tmp_path / "out").exists()  # nothing written: no empty folder left
    # ... while a model without a prior predicts as before
    plain = onnx_model(tmp_path / "plain.onnx")
    proc = eyelip_predict(str(photo), "--model", str(plain), "--out", str(tmp_path / "out"), prelude=NO_MEDIAPIPE)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic faces in CelebAMask-HQ's layout, unpacked; the photo of id 1 replaced by noise."""
    root = tmp_path_factory.mktemp("sample")
    generate_sample(root / "sample.zip", 3, seed=0, image_size=128, mask_size=128)
    with zipfile.ZipFile(root / "sample.zip") as archive:
        archive.extractall(root)
    folder = root / "CelebAMask-HQ"
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    (folder / "CelebA-HQ-img" / "1.jpg").write_bytes(encode(noise, "JPEG"))
    fuse_dataset(Source(folder), root / "fused", {"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}, n_jobs=1)
    return folder


def test_the_resize_stage_refuses_a_prior_without_mediapipe_at_once(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(
        EyelipError,
        match=r"^resize\.prior: the face-mesh prior 'facemesh_flip' needs mediapipe.*"
        r"pip install 'eyelip\[prior\]'",
    ):
        # before anything is read: these fused masks do not even exist
        resize_dataset(Source(sample), tmp_path / "no-fused", tmp_path / "out", 32, prior="facemesh_flip")


def test_evaluate_refuses_a_prior_model_without_mediapipe_at_once(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prior_model = onnx_model(tmp_path / "prior.onnx", "facemesh")
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    assert main(["evaluate", "--model", str(prior_model), "--data", str(sample)]) == 1
    assert capsys.readouterr().err == (
        f"eyelip evaluate: error: {prior_model}: the face-mesh prior 'facemesh' needs "
        f"mediapipe, which is not installed; pip install 'eyelip[prior]' (Python 3.11 "
        f"or 3.12)\n"
    )


@pytest.fixture
def mediapipe() -> None:
    pytest.importorskip("mediapipe", reason="the face-mesh prior needs the extra: pip install 'eyelip[prior]'")


@pytest.mark.usefixtures("mediapipe")
def test_a_photo_without_a_face_is_named_in_a_warning() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    with pytest.warns(
        NoFaceWarning,
        match=r"^noise\.jpg: no face found by the face mesh; its prior channels are "
        r"empty",
    ):
        model_input = decode_input(encode(noise, "JPEG"), SIZE, "noise.jpg", "facemesh")
    assert model_input.shape == (SIZE, SIZE, 5) and not model_input[..., 3:].any()


@pytest.mark.usefixtures("mediapipe")
def test_predict_writes_a_mask_for_a_faceless_photo_and_counts_them(mini: Path, tmp_path: Path) -> None:
    """One real face (read in place) and one photo of noise: both get a mask; the noise is named."""
    prior_model = onnx_model(tmp_path / "prior.onnx", "facemesh")
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(encode(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8), "JPEG"))
    real = mini / "CelebA-HQ-img" / "3.jpg"
    proc = eyelip_predict(str(real), str(noise), "--model", str(prior_model), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert {"3_mask.png", "noise_mask.png"} <= {p.name for p in (tmp_path / "out").iterdir()}
    warned = [line for line in proc.stderr.splitlines() if "no face found" in line]
    assert len(warned) == 1 and warned[0].startswith(f"eyelip predict: warning: {noise}: no face found"), proc.stderr
    assert (
        "no face found in 1 of 2 photos (each warned about above): their masks come from the pixels alone"
        in proc.stdout.splitlines()
    )


@pytest.mark.usefixtures("mediapipe")
def test_the_resize_stage_counts_the_photos_without_a_face(sample: Path, tmp_path: Path) -> None:
    source, fused = Source(sample), sample.parent / "fused"
    with pytest.warns(NoFaceWarning) as warned:
        summary = resize_dataset(source, fused, tmp_path / "resized", 32, n_jobs=1, prior="facemesh")
    # The mesh takes these drawn faces for faces (the test would notice if it did not), not the noise.
    faceless = [w for w in warned if issubclass(w.category, NoFaceWarning)]
    assert len(faceless) == 1 and str(faceless[0].message).startswith(f"{sample}/CelebA-HQ-img/1.jpg: no face found")
    images = np.load(tmp_path / "resized" / "images.npy")
    assert summary["no_face"] == 1 and [bool(image[..., 3:].any()) for image in images] == [True, False, True]
    plain = resize_dataset(source, fused, tmp_path / "plain", 32, n_jobs=1)
    assert "no_face" not in plain  # only a prior can miss a face
