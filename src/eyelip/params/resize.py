"""The ``resize:`` section: the arrays' sizes and prior channels."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from eyelip.errors import ParamError
from eyelip.params.core import Section

Prior = Literal["none", "facemesh", "facemesh_flip"]


class ResizeParams(Section):
    size: int = Field(128, ge=8)
    input_scale: int = Field(1, ge=1)
    train_scale: int = Field(1, ge=1)
    prior: Prior = "none"

    @model_validator(mode="after")
    def _train_scale_divides(self) -> ResizeParams:
        if self.input_scale % self.train_scale:
            raise ParamError(
                f"resize.train_scale: {self.train_scale} must divide resize.input_scale "
                f"({self.input_scale}): the network predicts at the training size from photos at "
                f"least that large"
            )
        return self
