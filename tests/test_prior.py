"""``resize.prior: facemesh`` (and ``facemesh_flip``): face-mesh outlines as input channels, from resize
to ``eyelip predict``.

The face mesh finds no face in the synthetic faces: the tests that need one use the real mini set (real_data).
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_samples
from PIL import Image

from eyelip.data.dataset import ResizedArrays
from eyelip.data.fuse import fuse_dataset
from eyelip.data.preprocess import decode_image, decode_input
from eyelip.data.prior import channels, compute
from eyelip.data.resize import resize_dataset
from eyelip.data.source import Source
from eyelip.data.spec import DataSpec
from eyelip.errors import DataError
from eyelip.evaluation.evaluate import source_batches
from eyelip.inference.predictors import OnnxPredictor, TorchPredictor
from eyelip.model.checkpoint import load_model, save_model
from eyelip.model.spec import ModelSpec
from eyelip.model.unet import build_model
from eyelip.params.train import AugmentParams
from eyelip.release.export import export_onnx
from eyelip.training.augment import Augment

EYELIP = Path(sys.executable).parent / "eyelip"
TWO = {"eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}
IDS = [3, 10, 57, 120, 250, 333, 480, 2001]  # both mask folders; 512 and 1024 px photos
# The face mesh is the optional extra: without it these tests skip (the core install's own tests cover the refusal).
needs_mediapipe = pytest.mark.skipif(
    importlib.util.find_spec("mediapipe") is None, reason="mediapipe not installed: pip install 'eyelip[prior]'"
)


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def resized(mini: Path, tmp_path_factory: pytest.TempPathFactory) -> ResizedArrays:
    """Real faces through the fuse-masks and resize stages' own code, with the prior."""
    root = tmp_path_factory.mktemp("prior")
    subset = Source(copy_samples(mini, root / "data", IDS))
    fuse_dataset(subset, root / "fused", TWO, n_jobs=1)
    resize_dataset(subset, root / "fused", root / "resized", 128, n_jobs=1, prior="facemesh")
    return ResizedArrays(root / "resized")


@needs_mediapipe
def test_outlines_overlap_the_real_ground_truth(resized: ResizedArrays) -> None:
    assert resized.spec.prior == "facemesh" and resized.spec.input_channels == 5
    outlines = np.asarray(resized.images[..., 3:]).transpose(0, 3, 1, 2) >= 128  # coverage >= 0.5, as the masks
    truth = np.asarray(resized.masks) > 0
    iou = (outlines & truth).sum((0, 2, 3)) / (outlines | truth).sum((0, 2, 3))
    # On all 504 mini faces: eyes 0.73, lips 0.77; an outline in the wrong place would score ~0.
    assert iou[0] > 0.6 and iou[1] > 0.65, iou


@needs_mediapipe
def test_prior_channels_follow_the_image_channels(resized: ResizedArrays, mini: Path) -> None:
    data = (mini / "CelebA-HQ-img" / f"{resized.ids[0]}.jpg").read_bytes()
    np.testing.assert_array_equal(resized.images[0, ..., :3], decode_image(data, 128, "x"))  # RGB as without it
    np.testing.assert_array_equal(resized.images[0], decode_input(data, 128, "x", "facemesh"))  # deterministic


@needs_mediapipe
def test_the_flip_prior_is_mirror_symmetric_where_one_mesh_run_is_not(mini: Path) -> None:
    """facemesh_flip averages the mesh on the photo and on its mirror image, so a mirrored photo gets
    the mirrored prior (to the outline's rasterisation); one mesh run errs differently on each side."""
    rgb = decode_image((mini / "CelebA-HQ-img" / f"{IDS[1]}.jpg").read_bytes(), None, "x")

    def asymmetry(kind: str) -> int:
        prior = compute(kind, rgb, 64).astype(int)
        return int(np.abs(prior[:, ::-1] - compute(kind, np.ascontiguousarray(rgb[:, ::-1]), 64)).sum())

    flip, single = asymmetry("facemesh_flip"), asymmetry("facemesh")
    assert flip < single / 20, (flip, single)  # here: 0 against 4,798 (sum of 0-255 differences)
    averaged, one_run = compute("facemesh_flip", rgb, 64), compute("facemesh", rgb, 64)
    assert averaged.shape == (64, 64, 2) and averaged.dtype == np.uint8
    np.testing.assert_allclose(averaged, one_run, atol=128)  # the same outlines, moved a little
    assert (averaged >= 128).sum() > 0.5 * (one_run >= 128).sum()


@needs_mediapipe
def test_a_photo_without_a_face_gets_empty_prior_channels() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    model_input = decode_input(jpeg(noise), 64, "noise.jpg", "facemesh")
    assert model_input.shape == (64, 64, 5) and not model_input[..., 3:].any()
    assert decode_input(jpeg(noise), 64, "noise.jpg").shape == (64, 64, 3)
    with pytest.raises(ValueError, match="unknown prior 'dlib'"):
        channels("dlib")


def test_colour_jitter_skips_prior_channels_and_warps_move_them_with_the_pixels() -> None:
    rng = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 32, 32, generator=rng)
    with_prior = torch.cat([images, images[:, :1], images[:, 1:2]], 1)  # priors = copies of R and G
    masks = (torch.rand(4, 1, 32, 32, generator=rng) > 0.5).float()
    full = Augment(
        AugmentParams(
            hflip=0.5, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, rotate=15, scale=0.1, translate=0.1
        )
    )
    plain, plain_masks = full(images, masks, torch.Generator().manual_seed(1))
    out, out_masks = full(with_prior, masks, torch.Generator().manual_seed(1))
    # The prior changes neither the random draws nor what happens to R, G, B and the masks.
    torch.testing.assert_close(out[:, :3], plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_masks, plain_masks, rtol=0, atol=0)
    geometric = Augment(AugmentParams(**{"hflip": 0.5, "rotate": 15, "scale": 0.1, "translate": 0.1}))
    warped, _ = geometric(with_prior, masks, torch.Generator().manual_seed(2))
    torch.testing.assert_close(warped[:, 3:], warped[:, :2], rtol=0, atol=1e-6)
    colour = Augment(AugmentParams(**{"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.1}))
    jittered, _ = colour(with_prior, masks, torch.Generator().manual_seed(3))
    assert not torch.allclose(jittered[:, :2], with_prior[:, :2])
    torch.testing.assert_close(jittered[:, 3:], with_prior[:, 3:], rtol=0, atol=0)


def test_resized_arrays_refuse_channels_that_do_not_match_the_prior(tmp_path: Path) -> None:
    np.save(tmp_path / "images.npy", np.zeros((2, 32, 32, 4), np.uint8))
    np.save(tmp_path / "masks.npy", np.zeros((2, 2, 32, 32), np.uint8))
    (tmp_path / "ids.txt").write_text("3\n7\n")
    DataSpec({"eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}, 32, prior="facemesh").write(tmp_path)
    with pytest.raises(
        DataError,
        match=r"images.npy: rows of shape \(32, 32, 4\), but .*meta.json makes them "
        r"\(32, 32, 5\) .*prior 'facemesh'",
    ):
        ResizedArrays(tmp_path)


@needs_mediapipe
def test_a_model_with_a_prior_predicts_from_plain_photos(resized: ResizedArrays, mini: Path, tmp_path: Path) -> None:
    """Checkpoint and ONNX export record the prior; evaluate and predict rebuild it from each photo."""
    torch.manual_seed(0)
    model = build_model({"base_width": 4, "depth": 2}, out_channels=2, in_channels=resized.spec.input_channels).eval()
    save_model(tmp_path / "model.pt", model, ModelSpec.of(resized.spec, {"base_width": 4, "depth": 2}))
    loaded, file = load_model(tmp_path / "model.pt")
    assert file.spec.prior == "facemesh" and loaded.in_channels == 5
    torch_predictor = TorchPredictor(tmp_path / "model.pt")
    export_onnx(loaded, tmp_path / "model.onnx", file.spec, {})
    onnx_predictor = OnnxPredictor(tmp_path / "model.onnx")
    assert onnx_predictor.prior == "facemesh"
    batch = np.asarray(resized.images[:2])
    np.testing.assert_allclose(onnx_predictor(batch), torch_predictor(batch), atol=1e-5)
    # `eyelip evaluate` on a dataset folder rebuilds exactly the inputs the resize stage stored.
    (prepared,) = source_batches(Source(mini), list(resized.ids), onnx_predictor, len(resized.ids), n_jobs=1)
    np.testing.assert_array_equal(prepared.images, resized.images)

    photo = mini / "CelebA-HQ-img" / f"{resized.ids[0]}.jpg"
    proc = subprocess.run(
        [str(EYELIP), "predict", str(photo), "--model", str(tmp_path / "model.onnx"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / f"{resized.ids[0]}_lips_mask.png").is_file()
