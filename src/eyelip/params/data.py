"""The ``data:`` section: where the faces are and which parts make each target."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from eyelip.data.layout import PARTS
from eyelip.errors import ParamError
from eyelip.params.core import Section

Part = Literal[PARTS]  # type: ignore[valid-type]  # CelebAMask-HQ's part names (eyelip.data.layout)
Targets = dict[str, Annotated[list[Part], Field(min_length=1)]]
Rule = Literal["union", "label_map"]
OnError = Literal["fail", "skip"]


class DataParams(Section):
    root: str = Field("data/sample.zip", min_length=1, pattern=r"\S")
    targets: Targets = Field({"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}, min_length=1)
    aux_targets: Targets = {}
    rule: Rule = "union"
    on_error: OnError = "fail"

    @model_validator(mode="after")
    def _distinct_names(self) -> DataParams:
        clash = sorted(set(self.aux_targets) & set(self.targets))
        if clash:
            raise ParamError(f"data.aux_targets: {clash} are already data.targets; give auxiliary targets other names")
        return self
