"""Predictors: one call signature for the trained PyTorch model and the exported ONNX model.

A predictor maps uint8 model inputs (N, I, I, 3 + P) at its ``input_size`` I to probabilities
(N, C, S, S) at its ``size`` S (I = S unless the model was trained with ``resize.input_scale`` > 1;
P channels of its ``prior`` follow R, G, B: ``preprocess.decode_input`` makes them from a photo);
evaluation and ``eyelip predict`` only talk to this interface, so both model formats are scored by
exactly the same code. ONNX needs only onnxruntime (no torch, no training code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from eyelip.data.preprocess import to_nchw
from eyelip.errors import EyelipError
from eyelip.model.spec import SCORED_ALIKE, ModelSpec


class Predictor(Protocol):
    spec: ModelSpec  # the model's contract; the attributes below are read from it
    size: int  # output (mask) size
    input_size: int  # image size it takes
    targets: list[str]
    # How the ground truth of each target is built (``eyelip.data.fuse``), so evaluation on a raw
    # CelebAMask-HQ copy fuses the same parts with the same rule as the model was trained on.
    target_parts: dict[str, list[str]]
    rule: str
    prior: str  # ``resize.prior`` it was trained with: the input channels after R, G, B

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _describe(predictor: Predictor, spec: ModelSpec) -> None:
    """Set the Predictor attributes from the model's contract."""
    predictor.spec, predictor.size, predictor.input_size, predictor.prior = spec, spec.size, spec.input_size, spec.prior
    predictor.targets, predictor.target_parts, predictor.rule = spec.targets, spec.target_parts, spec.rule


class TorchPredictor:
    """``models/model.pt`` from the train stage, in fp32 eval mode."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import torch

        from eyelip.model.checkpoint import load_model

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model, self.file = load_model(path)
        _describe(self, self.file.spec)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            logits = self.model(self._torch.from_numpy(to_nchw(images)))
        return _sigmoid(logits.numpy())


class OnnxPredictor:
    """An exported ``model.onnx``; size and targets come from its metadata."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle workers sleep instead of spinning: ``eyelip predict`` writes PNGs on other threads while the
        # model runs (1.2-1.6x its throughput on 2 cores), and a server's other requests need the cores too.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise EyelipError(f"{path}: not a readable ONNX model ({exc}); export one with `dvc repro export`") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if "size" not in meta or "targets" not in meta:
            raise EyelipError(
                f"{path}: ONNX model without eyelip metadata (size, targets); export it with `dvc repro export`"
            )
        _describe(self, ModelSpec.from_strings(meta, str(path)))  # eyelip.release.export.export_onnx wrote it
        self._input = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self._input: to_nchw(images)})
        return _sigmoid(logits)


class FlipAveraged:
    """Test-time flip averaging: the mean of a predictor's probabilities for each image and for its
    mirror image (mirrored back). ``pairs`` are the output channels that swap under the mirror
    (``eyelip.data.layout.mirror_pairs``: left and right targets), so a left eye still lands in the left-eye
    channel. Prior channels are mirrored with the pixels: each holds both sides. Twice the inference
    cost."""

    def __init__(self, predictor: Predictor, pairs: list[tuple[int, int]] = ()) -> None:
        self.predictor = predictor
        _describe(self, predictor.spec)
        self.order = list(range(len(predictor.targets)))
        for i, j in pairs:
            self.order[i], self.order[j] = self.order[j], self.order[i]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        mirrored = self.predictor(np.ascontiguousarray(images[:, :, ::-1]))[:, self.order, :, ::-1]
        return (self.predictor(images) + mirrored) / 2


class Averaged:
    """An ensemble: the mean of several predictors' probabilities. They must agree on everything
    evaluation relies on (sizes, targets and how those are fused), or the mean would mix unlike
    channels; ``names`` label them in that error. N times the inference cost."""

    def __init__(self, predictors: list[Predictor], names: list[str]) -> None:
        if not predictors or len(predictors) != len(names):
            raise ValueError("one name per predictor, at least one predictor")
        first = predictors[0].spec
        self.predictors = predictors
        _describe(self, first)
        for predictor, name in zip(predictors[1:], names[1:]):
            for key in SCORED_ALIKE:
                if getattr(predictor.spec, key) != getattr(first, key):
                    raise EyelipError(
                        f"{name}: {key} {getattr(predictor.spec, key)!r} differs from {names[0]}'s "
                        f"{getattr(first, key)!r}; only models trained for the same targets and "
                        f"sizes can be averaged"
                    )

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return sum(predictor(images) for predictor in self.predictors) / len(self.predictors)


def load_predictor(path: str | Path, threads: int = 0) -> Predictor:
    path = Path(path)
    if not path.is_file():
        raise EyelipError(f"{path}: model file not found; run `dvc repro` to train and export one")
    if path.suffix == ".onnx":
        return OnnxPredictor(path, threads)
    if path.suffix == ".pt":
        return TorchPredictor(path, threads)
    raise EyelipError(f"{path}: unknown model format; expected models/model.onnx or models/model.pt")
