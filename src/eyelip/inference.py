"""Predictors: one call signature for the trained PyTorch model and the exported ONNX model.

A predictor maps uint8 model inputs (N, I, I, 3 + P) at its ``input_size`` I to probabilities
(N, C, S, S) at its ``size`` S (I = S unless the model was trained with ``resize.input_scale`` > 1;
P channels of its ``prior`` follow R, G, B: ``preprocess.decode_input`` makes them from a photo);
evaluation and ``eyelip predict`` only talk to this interface, so both model formats are scored by
exactly the same code. ONNX needs only onnxruntime (no torch, no training code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from eyelip.errors import EyelipError

# What models saved before target parts and the fuse rule were recorded were trained on.
DEFAULT_TARGET_PARTS = {"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}
DEFAULT_RULE = "union"


class Predictor(Protocol):
    size: int  # output (mask) size
    input_size: int  # image size it takes
    targets: list[str]
    # How the ground truth of each target is built (``eyelip.fuse``), so evaluation on a raw
    # CelebAMask-HQ copy fuses the same parts with the same rule as the model was trained on.
    target_parts: dict[str, list[str]]
    rule: str
    prior: str  # ``resize.prior`` it was trained with: the input channels after R, G, B

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def to_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, K) -> float32 (N, K, S, S) in [0, 1]; the same rule as ``dataset.to_input``."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class TorchPredictor:
    """``models/model.pt`` from the train stage, in fp32 eval mode."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import torch

        from eyelip.train import load_model

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        try:
            self.model, ckpt = load_model(path)
        except Exception as exc:  # torch.load raises several types for a corrupt or foreign file
            raise EyelipError(f"{path}: not a readable eyelip checkpoint ({exc}); train one with `dvc repro`") from exc
        self.size, self.targets = int(ckpt["size"]), list(ckpt["targets"])
        self.input_size = int(ckpt["input_size"])
        self.target_parts = dict(ckpt.get("target_parts") or DEFAULT_TARGET_PARTS)
        self.rule = str(ckpt.get("rule") or DEFAULT_RULE)
        self.prior = str(ckpt["prior"])

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
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise EyelipError(f"{path}: not a readable ONNX model ({exc}); export one with `dvc repro export`") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if "size" not in meta or "targets" not in meta:
            raise EyelipError(f"{path}: ONNX model without eyelip metadata (size, targets); "
                              f"export it with `dvc repro export`")
        self.size, self.targets = int(meta["size"]), json.loads(meta["targets"])
        self.input_size = int(meta.get("input_size", self.size))
        self.target_parts = json.loads(meta["target_parts"]) if "target_parts" in meta else dict(DEFAULT_TARGET_PARTS)
        self.rule = meta.get("rule", DEFAULT_RULE)
        self.prior = meta.get("prior", "none")
        self._input = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self._input: to_nchw(images)})
        return _sigmoid(logits)


class FlipAveraged:
    """Test-time flip averaging: the mean of a predictor's probabilities for each image and for its
    mirror image (mirrored back). ``pairs`` are the output channels that swap under the mirror
    (``augment.mirror_pairs``: left and right targets), so a left eye still lands in the left-eye
    channel. Prior channels are mirrored with the pixels: each holds both sides. Twice the inference
    cost."""

    def __init__(self, predictor: Predictor, pairs: list[tuple[int, int]] = ()) -> None:
        self.predictor = predictor
        self.size, self.input_size, self.targets = predictor.size, predictor.input_size, predictor.targets
        self.target_parts, self.rule, self.prior = predictor.target_parts, predictor.rule, predictor.prior
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
        first = predictors[0]
        self.predictors = predictors
        self.size, self.input_size, self.targets = first.size, first.input_size, first.targets
        self.target_parts, self.rule, self.prior = first.target_parts, first.rule, first.prior
        for predictor, name in zip(predictors[1:], names[1:]):
            for key in ("size", "input_size", "targets", "target_parts", "rule", "prior"):
                if getattr(predictor, key) != getattr(first, key):
                    raise EyelipError(f"{name}: {key} {getattr(predictor, key)!r} differs from {names[0]}'s "
                                      f"{getattr(first, key)!r}; only models trained for the same targets and "
                                      f"sizes can be averaged")

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
