"""The weight average (train.ema): its arithmetic, and that training validates, saves and resumes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from eyelip.data.dataset import ResizedArrays
from eyelip.errors import ParamError
from eyelip.model.checkpoint import Resume
from eyelip.params.whole import parse
from eyelip.tracking.plots import training_curves
from eyelip.training.ema import WeightAverage
from eyelip.training.loop import TrainConfig, Trainer, fit

TARGETS = {"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}


def test_average_moves_towards_the_weights_with_a_warm_up() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1))
    with torch.no_grad():
        model[0].weight.fill_(0.0)
    ema = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    model[1].num_batches_tracked += 5
    ema.update(model)  # step 1: decay min(0.9, 2/11)
    assert ema.model[0].weight.item() == pytest.approx(1 - 2 / 11)
    assert ema.model[1].num_batches_tracked.item() == 5, "integer buffers are copied, not averaged"
    for _ in range(200):
        ema.update(model)
    assert ema.model[0].weight.item() == pytest.approx(1.0, abs=1e-6)
    assert not ema.model[0].weight.requires_grad


def test_ema_is_validated_saved_and_resumed(tiny_arrays: ResizedArrays, tmp_path: Path) -> None:
    rows = np.arange(16)
    cfg = TrainConfig(model={"base_width": 4, "depth": 2}, epochs=1, batch_size=8, ema=0.9, val_raw=True)
    summary = fit(cfg, tiny_arrays, rows[:8], rows[8:], tmp_path / "model.pt", tmp_path / "resume.pt", "job")
    assert {"val_iou", "val_iou_raw"} <= set(summary["history"][0])
    state = Resume.load(tmp_path / "resume.pt").trainer
    saved = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    for key, value in state["ema"]["model"].items():  # the saved model is the average, not the last weights
        assert torch.equal(saved[key], value), key
    assert any(not torch.equal(state["model"][k], v) for k, v in saved.items() if v.is_floating_point())
    resumed = Trainer(cfg, tiny_arrays, rows[:8], rows[8:], list(TARGETS))
    resumed.load_state(state)
    assert resumed.ema.steps == 1 and all(torch.equal(resumed.ema.model.state_dict()[k], v) for k, v in saved.items())


def test_validating_the_raw_weights_changes_nothing_else(tiny_arrays: ResizedArrays, tmp_path: Path) -> None:
    """train.val_raw is a diagnostic: the same run without it trains the same model, one pass cheaper."""
    rows = np.arange(16)
    runs = {}
    for val_raw in (True, False):
        cfg = TrainConfig(model={"base_width": 4, "depth": 2}, epochs=2, batch_size=8, ema=0.9, val_raw=val_raw)
        runs[val_raw] = fit(
            cfg, tiny_arrays, rows[:8], rows[8:], tmp_path / f"{val_raw}.pt", tmp_path / f"r{val_raw}.pt", "job"
        )
    assert [("val_iou_raw" in row) for row in runs[True]["history"] + runs[False]["history"]] == [True] * 2 + [
        False
    ] * 2
    for key in ("train_iou", "val_iou", "val_jaccard_loss"):
        assert [row[key] for row in runs[True]["history"]] == [row[key] for row in runs[False]["history"]], key
    with_raw, without = (torch.load(tmp_path / f"{v}.pt", weights_only=True)["state_dict"] for v in (True, False))
    assert all(torch.equal(with_raw[k], without[k]) for k in with_raw)


def test_without_validation_faces_the_last_epoch_is_kept(tiny_arrays: ResizedArrays, tmp_path: Path) -> None:
    """split.val: 0 trains on every non-test face; nothing to pick an epoch by, so the last one is saved."""
    rows = np.arange(16)
    cfg = TrainConfig(model={"base_width": 4, "depth": 2}, epochs=2, batch_size=8, ema=0.9)
    summary = fit(cfg, tiny_arrays, rows, rows[:0], tmp_path / "model.pt", tmp_path / "resume.pt", "job")
    assert summary["best_epoch"] == 2 and summary["best_val_iou"] is None
    assert not [key for key in summary["history"][-1] if key.startswith("val_")]
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    state = Resume.load(tmp_path / "resume.pt").trainer
    assert saved["epoch"] == 2 and all(torch.equal(saved["state_dict"][k], v) for k, v in state["ema"]["model"].items())
    training_curves(summary["history"], tmp_path / "curves.png", summary["best_epoch"])  # train curves only
    assert (tmp_path / "curves.png").stat().st_size > 0
    with pytest.raises(ParamError, match="train.patience: early stopping needs validation faces"):
        fit(
            TrainConfig(model=cfg.model, epochs=2, patience=3),
            tiny_arrays,
            rows,
            rows[:0],
            tmp_path / "m.pt",
            tmp_path / "r.pt",
            "job",
        )


def test_ema_params_are_checked() -> None:
    def config(**train: object) -> TrainConfig:
        return TrainConfig.from_params(
            parse(
                {
                    "model": {"base_width": 4, "depth": 2},
                    "train": {"epochs": 1, "batch_size": 1, "lr": 0.1, "seed": 0, **train},
                }
            )
        )

    with pytest.raises(ParamError, match=r"train.ema: expected a value <= 0.99999, got 1"):
        config(ema=1)
    with pytest.raises(ParamError, match=r"train.val_raw: expected true or false, got 'yes'"):
        config(ema=0.9, val_raw="yes")
    assert config(ema=0.9, val_raw=True).val_raw and not config(ema=0.9).val_raw
