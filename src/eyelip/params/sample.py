"""The ``sample:`` section: the built-in synthetic sample."""

from __future__ import annotations

from pydantic import Field

from eyelip.params.core import Section


class SampleParams(Section):
    n: int = Field(600, ge=1)
    seed: int = Field(0, ge=0)
    image_size: int = Field(512, ge=16)
    mask_size: int = Field(512, ge=16)
