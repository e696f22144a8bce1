"""The ``split:`` section: train/val/test sizes or folds."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from eyelip.errors import ParamError
from eyelip.params.core import Section


class SplitParams(Section):
    seed: int = Field(0, ge=0)
    # A count (int) or a fraction (float): the type decides, so it is kept as written.
    train: int | float = 0.8
    val: int | float = 0.1
    test: int | float = 0.1
    folds: int = Field(0, ge=0)
    fold: int = Field(0, ge=0)

    @field_validator("train", "val", "test", mode="before")
    @classmethod
    def _count_or_fraction(cls, value: Any, info: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < 0
            or (isinstance(value, float) and value > 1)
        ):
            raise ParamError(
                f"split.{info.field_name}: expected a count (e.g. 8100) or a fraction (e.g. 0.8), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _sizes(self) -> SplitParams:
        if self.folds == 1:
            raise ParamError("split.folds: expected 0 (off) or 2 or more folds, got 1")
        if self.folds and self.fold >= self.folds:
            raise ParamError(f"split.fold: expected a fold index 0..{self.folds - 1}, got {self.fold}")
        if self.folds:
            return self  # train and test are unused; val is a count or a share of the rest
        sizes = (self.train, self.val, self.test)
        if len({type(v) for v in sizes}) > 1:
            raise ParamError(
                "split: give train, val and test all as counts (8100) or all as fractions (0.8), not mixed"
            )
        if isinstance(self.train, float) and sum(sizes) > 1 + 1e-9:
            raise ParamError(f"split: fractions train+val+test = {sum(sizes):g} > 1")
        return self
