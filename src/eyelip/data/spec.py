"""What the resized arrays hold (``data/resized/meta.json``): the data's layout, written by ``resize``.

The targets (name -> the parts fused into each) and how their ground truth was fused, the auxiliary
targets, the mask size, the input and training scales and the prior. ``train`` reads the layout
from here, not from params, and a trained model records it (``eyelip.model.spec.ModelSpec``
extends it with the network), so data and model are described by the same fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from eyelip.data.prior import channels as prior_channels
from eyelip.errors import DataError

META = "meta.json"


@dataclass(frozen=True)
class DataSpec:
    """The layout of a resized dataset. Serialised with derived keys (``targets``: the names in
    channel order, ``input_size``, ``train_size``, ``input_channels``) for readers without eyelip."""

    target_parts: dict[str, list[str]]  # each target's parts, in channel order
    size: int  # mask (model output) size S
    rule: str = "union"  # how parts were fused (eyelip.data.fuse.RULES)
    aux_targets: dict[str, list[str]] = field(default_factory=dict)  # trained after the targets, never scored
    input_scale: int = 1  # photos at S * input_scale
    train_scale: int = 1  # training masks at S * train_scale
    prior: str = "none"  # the prior's channels after R, G, B (eyelip.data.prior)

    def __post_init__(self) -> None:
        for name in ("target_parts", "aux_targets"):  # own plain copies: the spec does not change
            object.__setattr__(self, name, {str(k): [str(p) for p in v] for k, v in getattr(self, name).items()})
        prior_channels(self.prior)  # ValueError for an unknown prior
        if min(self.size, self.input_scale, self.train_scale) < 1 or self.input_scale % self.train_scale:
            raise ValueError(
                f"sizes: mask {self.size} px, input_scale {self.input_scale}, train_scale "
                f"{self.train_scale} (positive, train_scale dividing input_scale)"
            )

    @property
    def targets(self) -> list[str]:
        return list(self.target_parts)

    @property
    def channels(self) -> list[str]:
        """The mask channels: the targets, then the auxiliary targets."""
        return [*self.target_parts, *self.aux_targets]

    @property
    def input_size(self) -> int:
        return self.size * self.input_scale

    @property
    def train_size(self) -> int:
        return self.size * self.train_scale

    @property
    def input_channels(self) -> int:
        """R, G, B and the prior's channels."""
        return 3 + prior_channels(self.prior)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the fields and the derived keys."""
        return {
            "targets": self.targets,
            **{f.name: getattr(self, f.name) for f in fields(DataSpec)},
            "input_size": self.input_size,
            "train_size": self.train_size,
            "input_channels": self.input_channels,
        }

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], where: str, remedy: str = "re-run `dvc repro resize`") -> DataSpec:
        """The spec from :meth:`to_dict`'s fields (derived keys are ignored); errors for missing or
        invalid fields name ``where`` and end with ``remedy``."""
        missing = [f.name for f in fields(DataSpec) if f.name not in meta]
        if missing:
            raise DataError(f"{where}: no {', '.join(missing)} (written by an older eyelip); {remedy}")
        try:
            return DataSpec(**{f.name: meta[f.name] for f in fields(DataSpec)})
        except (AttributeError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: invalid data layout ({exc}); {remedy}") from exc

    def write(self, directory: str | Path) -> None:
        """``meta.json`` in ``directory`` (inside a stage's atomic output folder)."""
        (Path(directory) / META).write_text(json.dumps({**self.to_dict(), "channels": self.channels}, indent=2))

    @classmethod
    def read(cls, directory: str | Path) -> DataSpec:
        path = Path(directory) / META
        if not path.is_file():
            raise DataError(f"{path}: not found; re-run `dvc repro resize`")
        return cls.from_dict(json.loads(path.read_text()), str(path))
