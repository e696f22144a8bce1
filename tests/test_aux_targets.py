"""Auxiliary targets (data.aux_targets): fused after the targets, trained, never scored, not saved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eyelip.data.arrays import ids_text
from eyelip.data.dataset import ResizedArrays, to_input
from eyelip.data.fuse import FusedMasks, check_aux_targets, fuse_dataset
from eyelip.data.resize import resize_dataset
from eyelip.data.source import Source
from eyelip.data.spec import DataSpec
from eyelip.data.synthetic import generate_sample
from eyelip.errors import DataError, ParamError
from eyelip.evaluation.evaluate import TestSplit
from eyelip.model.checkpoint import Resume, load_model
from eyelip.model.metrics import confusion, iou
from eyelip.model.unet import build_model
from eyelip.training.loop import TrainConfig, fit

TWO = {"eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}
AUX = {"skin": ["skin"], "brows": ["l_brow", "r_brow"]}


def test_aux_channels_follow_the_targets_and_are_not_scored(tmp_path: Path) -> None:
    generate_sample(tmp_path / "faces.zip", n=6, seed=0, image_size=128, mask_size=128)
    source = Source(tmp_path / "faces.zip")
    fuse_dataset(source, tmp_path / "plain", TWO, n_jobs=1)
    summary = fuse_dataset(source, tmp_path / "fused", TWO, aux_targets=AUX, n_jobs=1)
    plain, fused = FusedMasks(tmp_path / "plain"), FusedMasks(tmp_path / "fused")
    assert fused.targets == TWO and fused.aux_targets == AUX and fused.channels == 4
    assert list(summary["coverage"]) == ["eyes", "lips", "skin", "brows"]
    assert summary["coverage"]["skin"] > 0.1 and summary["coverage"]["brows"] > 0
    for row in range(len(fused)):
        assert np.array_equal(fused[row][:2], plain[row]), "the targets' channels are unchanged"
    resize_dataset(source, tmp_path / "fused", tmp_path / "resized", 64, n_jobs=1)
    arrays = ResizedArrays(tmp_path / "resized")
    assert arrays.spec.channels == ["eyes", "lips", "skin", "brows"] and arrays.spec.aux_targets == AUX
    rows = np.arange(len(arrays.ids))
    (batch,) = TestSplit(arrays, fused, rows).batches(len(rows))
    assert batch.masks.shape[1] == 2 and all(native.shape[0] == 2 for native in batch.native)


def test_aux_target_errors_name_the_key() -> None:
    with pytest.raises(ParamError, match=r"data.aux_targets.brows: unknown part 'brow'"):
        check_aux_targets({"brows": ["brow"]}, TWO)
    with pytest.raises(ParamError, match=r"data.aux_targets: \['eyes'\] are already data.targets"):
        check_aux_targets({"eyes": ["l_eye"]}, TWO)
    assert check_aux_targets({}, TWO) == {} and check_aux_targets(None, TWO) == {}


@pytest.fixture
def arrays(tmp_path: Path) -> ResizedArrays:
    """16 random 32 px faces, one target channel and two auxiliary ones."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    np.save(tmp_path / "masks.npy", (rng.random((16, 3, 32, 32)) < [[[0.05]], [[0.5]], [[0.2]]]).astype(np.uint8))
    (tmp_path / "ids.txt").write_text(ids_text(list(range(16))))
    DataSpec({"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}, 32, aux_targets=AUX).write(tmp_path)
    return ResizedArrays(tmp_path)


def test_training_learns_aux_targets_but_saves_and_scores_only_the_targets(
    arrays: ResizedArrays, tmp_path: Path
) -> None:
    cfg = TrainConfig(model={"base_width": 4, "depth": 2}, epochs=1, batch_size=8, loss={"jaccard": 1.0, "bce": 0.5})
    rows = np.arange(16)
    summary = fit(cfg, arrays, rows[:8], rows[8:], tmp_path / "model.pt", tmp_path / "resume.pt", "job")
    row = summary["history"][0]
    assert row["train_aux_loss"] > 0 and row["val_aux_loss"] > 0
    model, file = load_model(tmp_path / "model.pt")
    assert file.spec.targets == ["eyes_lips"] and model.head.weight.shape[0] == 1
    assert file.spec.aux_targets == AUX, "the model records what it was trained with"
    # The saved head is the trained head's first row: the target's logits are unchanged.
    full = build_model(cfg.model, out_channels=3)
    full.load_state_dict(Resume.load(tmp_path / "resume.pt").trainer["model"])
    x = to_input(arrays.images[8:])
    with torch.no_grad():
        saved_logits, full_logits = model(x), full.eval()(x)
    assert torch.allclose(saved_logits, full_logits[:, :1], atol=1e-5)
    # val_iou is the target's IoU alone, not an average over the auxiliary channels too.
    y = torch.from_numpy(arrays.masks[8:].astype(np.float32))
    assert row["val_iou"] == pytest.approx(
        iou(confusion(torch.sigmoid(full_logits[:, :1]), y[:, :1]).sum(0)).item(), abs=1e-3
    )
    assert row["val_iou"] != pytest.approx(iou(confusion(torch.sigmoid(full_logits), y).sum(0)).mean().item(), abs=1e-3)


def test_arrays_without_the_aux_channels_are_refused(arrays: ResizedArrays, tmp_path: Path) -> None:
    DataSpec({"eyes_lips": ["l_eye"]}, 32).write(tmp_path)  # a layout that leaves out the auxiliary targets
    with pytest.raises(
        DataError,
        match=r"masks.npy: rows of shape \(3, 32, 32\), but .*meta.json makes them "
        r"\(1, 32, 32\) \(channels \['eyes_lips'\].*re-run `dvc repro resize`",
    ):
        ResizedArrays(tmp_path)
