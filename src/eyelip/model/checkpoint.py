"""Every checkpoint format: the model file (``models/model.pt``) and the resume state (``models/resume.pt``).

- The model file holds the weights and the model's contract (:class:`eyelip.model.spec.ModelSpec`:
  everything needed to rebuild and feed it without the pipeline), plus where it came from (epoch,
  val_iou). Its keys are flat, as since the first version, so files of every version load; what
  older files lack is filled in by :func:`eyelip.model.spec.legacy`.
- The resume state is the whole training state after an epoch (:class:`Resume`), with its own
  format version: a file of another format is not resumed from, only reported.

torch is imported only where weights are touched (``eyelip predict`` runs on onnxruntime alone).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eyelip import atomic
from eyelip.errors import DataError
from eyelip.model.spec import ModelSpec

if TYPE_CHECKING:
    from eyelip.model.unet import UNet

# Model files before this number was recorded are format 1 (same flat layout, fewer keys).
MODEL_FORMAT = 2
RESUME_FORMAT = 1
INPUT = "RGB then the prior's channels, float in [0, 1], NCHW"


@dataclass(frozen=True)
class ModelFile:
    """What a model file says besides its weights."""

    spec: ModelSpec
    epoch: int | None = None  # the training epoch it is from
    val_iou: float | None = None  # its validation IoU then (None without validation faces)


def model_file(model: UNet, spec: ModelSpec, epoch: int | None = None, val_iou: float | None = None) -> dict[str, Any]:
    """The model file's contents: weights, ``spec`` and where it came from. Only the head's first
    outputs, the targets' (not the auxiliary targets'), are kept: the head is a 1x1 conv, so
    dropping a channel's row leaves the others' logits unchanged."""
    channels = len(spec.target_parts)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state["head.weight"], state["head.bias"] = state["head.weight"][:channels], state["head.bias"][:channels]
    return {
        "format": MODEL_FORMAT,
        "state_dict": state,
        "input": INPUT,
        **spec.to_dict(),
        "epoch": epoch,
        "val_iou": val_iou,
    }


def write_model_file(path: str | os.PathLike[str], contents: dict[str, Any]) -> None:
    import torch

    with atomic.atomic_path(path) as tmp:
        torch.save(contents, tmp)


def save_model(
    path: str | os.PathLike[str], model: UNet, spec: ModelSpec, epoch: int | None = None, val_iou: float | None = None
) -> None:
    """Write :func:`model_file` to ``path``, atomically."""
    write_model_file(path, model_file(model, spec, epoch, val_iou))


def load_model(path: str | os.PathLike[str]) -> tuple[UNet, ModelFile]:
    """The model in eval mode and what its file says, for model files of any version."""
    import torch

    from eyelip.model.unet import UNet

    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises several types for a corrupt or foreign file
        raise DataError(f"{path}: not a readable eyelip model file ({exc}); train one with `dvc repro`") from exc
    if not isinstance(contents, dict) or "state_dict" not in contents:
        raise DataError(f"{path}: not an eyelip model file (no weights); train one with `dvc repro`")
    if contents.get("format", 1) > MODEL_FORMAT:
        raise DataError(
            f"{path}: model file format {contents['format']} is newer than this eyelip's "
            f"({MODEL_FORMAT}); upgrade eyelip"
        )
    spec = ModelSpec.from_dict(contents, str(path))
    try:
        model = UNet(**spec.unet_kwargs())
        model.load_state_dict(contents["state_dict"])
    except (RuntimeError, TypeError, ValueError) as exc:
        lines = [line.strip() for line in str(exc).splitlines()]  # torch lists every mismatch, one per line
        reason = lines[-1] if len(lines) < 3 else f"{lines[1]}, and {len(lines) - 2} more"
        raise DataError(f"{path}: the weights do not fit the recorded network ({reason}); re-train it") from exc
    return model.eval(), ModelFile(spec, contents.get("epoch"), contents.get("val_iou"))


@dataclass
class Resume:
    """The resume state: the training job it belongs to and everything needed to continue it."""

    fingerprint: str  # the training job (eyelip.training.loop.TrainConfig.fingerprint)
    run_id: str | None  # its MLflow run
    finished: bool  # the last epoch (or early stop) is done: nothing to resume
    trainer: dict[str, Any]  # weights, optimizer, schedule, RNG states, history (Trainer.state)
    best_model: dict[str, Any] | None  # model_file() contents of the best epoch so far

    def save(self, path: str | os.PathLike[str]) -> None:
        import torch

        with atomic.atomic_path(path) as tmp:
            torch.save({"format": RESUME_FORMAT, **vars(self)}, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: Any = "cpu") -> Resume:
        """The resume state at ``path``; DataError, saying why, for a file that is not one of this format."""
        import torch

        try:
            contents = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # torch.load raises several types for a corrupt or foreign file
            raise DataError(f"{path}: unreadable ({exc})") from exc
        found = contents.get("format") if isinstance(contents, dict) else None
        if found != RESUME_FORMAT:
            raise DataError(f"{path}: resume state of format {found}, not {RESUME_FORMAT} (another eyelip version)")
        return cls(**{key: contents[key] for key in ("fingerprint", "run_id", "finished", "trainer", "best_model")})
