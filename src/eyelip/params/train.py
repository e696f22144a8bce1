"""The ``train:`` section, with its ``loss:`` and ``augment:`` subsections."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from eyelip.errors import ParamError
from eyelip.params.core import Section

Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["cosine", "constant"]
Precision = Literal["auto", "bf16", "fp32"]
Reduction = Literal["per_image", "per_batch"]
Unit = Annotated[float, Field(ge=0, le=1)]
Pixels = Annotated[int, Field(ge=0, le=4096)]


class LossParams(Section):
    jaccard: float = Field(1.0, ge=0)
    bce: float = Field(0.0, ge=0)
    dice: float = Field(0.0, ge=0)
    lovasz: float = Field(0.0, ge=0)
    smooth: float = Field(1.0, gt=0)
    reduction: Reduction = "per_image"
    pos_weight: Annotated[float, Field(gt=0)] | list[Annotated[float, Field(gt=0)]] | None = None

    @model_validator(mode="after")
    def _some_weight(self) -> LossParams:
        if not any((self.jaccard, self.bce, self.dice, self.lovasz)):
            raise ParamError("train.loss: all weights (jaccard, bce, dice, lovasz) are 0; at least one must be > 0")
        return self


class AugmentParams(Section):
    hflip: Unit = 0.0
    brightness: Unit = 0.0
    contrast: Unit = 0.0
    saturation: Unit = 0.0
    hue: float = Field(0.0, ge=0, le=0.5)
    rotate: float = Field(0.0, ge=0, le=180)
    scale: float = Field(0.0, ge=0, lt=1)  # the zoom factor 1 - scale must stay positive
    translate: Unit = 0.0
    crop: Pixels = 0
    crop_jitter: Pixels = 0


class TrainParams(Section):
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Optimizer = "adamw"
    schedule: Schedule = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)
    patience: int = Field(0, ge=0)
    seed: int = Field(0, ge=0)
    precision: Precision = "auto"
    nproc: int = Field(1, ge=1)
    aux_weight: float = Field(0.5, ge=0)
    ema: float = Field(0.0, ge=0, le=0.99999)
    val_raw: bool = False
    loss: LossParams = LossParams()
    augment: AugmentParams = AugmentParams()
