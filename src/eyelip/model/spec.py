"""The model contract: what a trained model is, written and read one way wherever it is recorded.

A :class:`ModelSpec` is the layout of the data the model was trained on (``eyelip.data.spec.DataSpec``:
targets and their parts, the fuse rule, auxiliary targets, sizes and scales, prior) plus its
network arguments (the ``model`` params section; keys left out take the U-Net's defaults). It is
recorded in three places, all through this module: the model file (:meth:`to_dict`, in
``eyelip.model.checkpoint``), the ONNX metadata and the registry's lineage tags (both
:meth:`to_strings`, string values). Files written by older versions lack some keys: what they were
trained with is filled in by :func:`legacy`, the one home of those defaults. No torch here: ``eyelip
predict`` reads the contract on onnxruntime alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from eyelip.data.spec import DataSpec
from eyelip.errors import DataError

# What a consumer of the model relies on: models equal here are interchangeable (the registry keeps
# one such layout per registered name; its tags and names hash these keys, so keep them).
LAYOUT = ("targets", "target_parts", "input_channels", "input_size", "size", "prior")
# The same, plus the ground-truth rule: what two models must share to be scored or averaged alike.
SCORED_ALIKE = (*LAYOUT, "rule")
# What models saved before target parts and the fuse rule were recorded were trained on.
DEFAULT_TARGET_PARTS = {"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}
# Keys held as plain strings in string maps (ONNX metadata, registry tags); the rest are JSON.
_STRINGS = frozenset(f.name for f in fields(DataSpec) if f.type == "str")


@dataclass(frozen=True)
class ModelSpec(DataSpec):
    """A trained model: the layout of its training data and its network arguments."""

    network: dict[str, Any] = field(default_factory=dict)  # U-Net keyword arguments (params' model section)

    @classmethod
    def of(cls, data: DataSpec, network: Mapping[str, Any]) -> ModelSpec:
        """The spec of a model of ``network`` (the ``model`` section, as a mapping) trained on ``data``."""
        return cls(**{f.name: getattr(data, f.name) for f in fields(DataSpec)}, network=dict(network))

    @property
    def data(self) -> DataSpec:
        return DataSpec(**{f.name: getattr(self, f.name) for f in fields(DataSpec)})

    def unet_kwargs(self) -> dict[str, Any]:
        """``eyelip.model.unet.UNet``'s arguments for the saved model: the targets' outputs only."""
        return {
            **self.network,
            "in_channels": self.input_channels,
            "out_channels": len(self.target_parts),
            "input_scale": self.input_scale,
            "output_scale": self.train_scale,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "model": dict(self.network)}

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], where: str, remedy: str = "re-train or re-export it") -> ModelSpec:
        """The spec of a model file (or a decoded :meth:`to_strings`), old files included."""
        filled = legacy(meta)
        return cls.of(DataSpec.from_dict(filled, where, remedy), filled["model"])

    def to_strings(self) -> dict[str, str]:
        """:meth:`to_dict` as strings (JSON but for the string fields): ONNX metadata, registry tags."""
        return {k: v if k in _STRINGS else json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_strings(cls, meta: Mapping[str, str], where: str) -> ModelSpec:
        """The spec from :meth:`to_strings` (other keys in ``meta`` are ignored)."""
        try:
            decoded = {k: v if k in _STRINGS else json.loads(v) for k, v in meta.items() if k in _KEYS}
        except ValueError as exc:
            raise DataError(f"{where}: unreadable model metadata ({exc})") from exc
        return cls.from_dict(decoded, where)

    def layout(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in LAYOUT}

    def differences(self, other: DataSpec, keys: tuple[str, ...] = LAYOUT) -> list[str]:
        """``key: mine vs theirs`` for each of ``keys`` that differs."""
        return [
            f"{key} {getattr(self, key)} vs {getattr(other, key)}"
            for key in keys
            if getattr(self, key) != getattr(other, key)
        ]

    def check_fits(self, data: DataSpec, where: str) -> None:
        """The model-vs-data check: the model at ``where`` must take the data's photos and prior and
        predict its targets, fused by the same rule, at its mask size."""
        differences = self.differences(data, SCORED_ALIKE)
        if differences:
            raise DataError(
                f"{where} does not fit the data ({'; '.join(differences)}, model vs data); re-run `dvc repro`"
            )


# Every key :meth:`ModelSpec.to_dict` writes (fields and derived keys), read back from string maps.
_KEYS = frozenset(ModelSpec(DEFAULT_TARGET_PARTS, 8).to_dict())


def legacy(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` with what files written before a key existed were trained with (model files, ONNX
    metadata, registry tags): the one place for old files' defaults."""
    filled = dict(meta)
    if "size" not in filled:
        return filled  # nothing to infer from; DataSpec.from_dict names what is missing
    size = int(filled["size"])
    filled.setdefault("input_scale", int(filled.get("input_size", size)) // size)  # before resize.input_scale
    filled.setdefault("train_scale", int(filled.get("train_size", size)) // size)  # before resize.train_scale
    filled.setdefault("prior", "none")  # before resize.prior
    filled.setdefault("aux_targets", {})  # before the model recorded data.aux_targets
    filled.setdefault("model", {})  # registry tags before the network was recorded: unknown
    filled["rule"] = filled.get("rule") or "union"  # before data.rule
    if not filled.get("target_parts"):  # before target parts were recorded: the default target
        names = list(filled.get("targets") or DEFAULT_TARGET_PARTS)
        # A target other than the default one with unknown parts: evaluation on raw data says so.
        filled["target_parts"] = DEFAULT_TARGET_PARTS if names == list(DEFAULT_TARGET_PARTS) else {n: [] for n in names}
    return filled
