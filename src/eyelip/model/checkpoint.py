"""The model file (``models/model.pt``): what it holds, how it is written and read back.

One home for the format: the weights plus what is needed to rebuild and feed the model without the
pipeline (targets and how their ground truth is fused, sizes, prior), the defaults that let files
written by older versions load, and the one check that a model fits a resized dataset. The metadata
helpers also serve the ONNX export's metadata, so torch is imported only where weights are touched
(``eyelip predict`` runs on onnxruntime alone).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from eyelip import atomic
from eyelip.data.prior import channels as prior_channels
from eyelip.errors import DataError

if TYPE_CHECKING:
    from eyelip.model.unet import UNet

# What models saved before target parts and the fuse rule were recorded were trained on.
DEFAULT_TARGET_PARTS = {"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}
DEFAULT_RULE = "union"
INPUT = "RGB then the prior's channels, float in [0, 1], NCHW"


class DataShape(Protocol):
    """What a model file records of the data it was trained on (``training.dataset.ResizedArrays``)."""

    size: int
    input_size: int
    train_size: int
    prior: str


def model_file(model: UNet, model_cfg: dict[str, Any], meta: dict[str, Any],
               channels: int | None = None) -> dict[str, Any]:
    """The model file's contents: weights, the ``model`` params section and ``meta``
    (:func:`model_meta`, plus where it came from: epoch, val_iou). With ``channels``, only the head's
    first ``channels`` outputs are kept (the targets, not the auxiliary targets): the head is a 1x1
    conv, so dropping a channel's row leaves the others' logits unchanged."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if channels is not None:
        state["head.weight"], state["head.bias"] = state["head.weight"][:channels], state["head.bias"][:channels]
    return {"state_dict": state, "model": model_cfg, "input": INPUT, **meta}


def write_model_file(path: str | os.PathLike[str], contents: dict[str, Any]) -> None:
    import torch

    with atomic.atomic_path(path) as tmp:
        torch.save(contents, tmp)


def save_model(path: str | os.PathLike[str], model: UNet, model_cfg: dict[str, Any], meta: dict[str, Any],
               channels: int | None = None) -> None:
    """Write :func:`model_file` to ``path``, atomically."""
    write_model_file(path, model_file(model, model_cfg, meta, channels))


def model_meta(targets: dict[str, list[str]], rule: str, data: DataShape) -> dict[str, Any]:
    """What is saved with the model so that it can be fed and read without the pipeline."""
    return {"targets": list(targets), "target_parts": targets, "rule": rule, "size": data.size,
            "input_size": data.input_size, "train_size": data.train_size, "prior": data.prior}


def with_defaults(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Fill in what files saved before a key existed were trained with (model files and ONNX metadata)."""
    ckpt.setdefault("input_size", ckpt["size"])  # before resize.input_scale: photos at the mask size
    ckpt.setdefault("train_size", ckpt["size"])  # before resize.train_scale
    ckpt.setdefault("prior", "none")  # before resize.prior
    ckpt["target_parts"] = dict(ckpt.get("target_parts") or DEFAULT_TARGET_PARTS)
    ckpt["rule"] = str(ckpt.get("rule") or DEFAULT_RULE)
    return ckpt


def load_model(path: str | os.PathLike[str]) -> tuple[UNet, dict[str, Any]]:
    """The model in eval mode and the file's contents (with :func:`with_defaults` applied)."""
    import torch

    from eyelip.model.unet import build_model

    try:
        ckpt = with_defaults(torch.load(path, map_location="cpu", weights_only=True))
        size = int(ckpt["size"])
        model = build_model(ckpt["model"], out_channels=len(ckpt["targets"]),
                            in_channels=3 + prior_channels(ckpt["prior"]),
                            input_scale=int(ckpt["input_size"]) // size, output_scale=int(ckpt["train_size"]) // size)
        model.load_state_dict(ckpt["state_dict"])
    except Exception as exc:  # torch.load raises several types for a corrupt or foreign file
        raise DataError(f"{path}: not a readable eyelip checkpoint ({exc}); train one with `dvc repro`") from exc
    return model.eval(), ckpt


def check_fits(ckpt: Mapping[str, Any], data: DataShape, where: str, targets: Sequence[str] | None = None) -> None:
    """The model-vs-data check: the model at ``where`` must take the data's input size and prior
    channels and predict at its mask size (and, given the data's ``targets``, the same channels)."""
    model = (int(ckpt["input_size"]), int(ckpt["size"]), str(ckpt["prior"]))
    if model != (data.input_size, data.size, data.prior) or (targets is not None and list(targets) != ckpt["targets"]):
        raise DataError(
            f"{where} ({model[0]} -> {model[1]} px, prior {model[2]}, targets {ckpt['targets']}) does not fit the "
            f"data ({data.input_size} -> {data.size} px, prior {data.prior}"
            + (f", targets {list(targets)}" if targets is not None else "") + "); re-run `dvc repro`")
