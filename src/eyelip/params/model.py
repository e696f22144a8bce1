"""The ``model:`` section: the U-Net's shape."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eyelip.params.core import Section

Norm = Literal["batch", "group", "none"]
Block = Literal["plain", "residual", "depthwise"]


class ModelParams(Section):
    base_width: int = Field(16, ge=1)
    depth: int = Field(4, ge=1)
    norm: Norm = "batch"
    dropout: float = Field(0.0, ge=0, lt=1)
    block: Block = "plain"
    prior_gate: int = Field(0, ge=0)
