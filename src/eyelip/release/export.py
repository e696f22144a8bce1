"""Deployable copies of the trained U-Net and proof that they compute the same thing.

- ONNX (opset 17, legacy TorchScript-based exporter: the dynamo exporter needs onnxscript, which is
  not a dependency). Input ``image`` float32 (N, 3 + P, H, W) in [0, 1] (P channels of the ``prior``
  metadata after R, G, B), output ``logits
  (N, C, H/k, W/k), k = ``input_size / size`` (1 unless trained with ``resize.input_scale``).
  Batch, height and width are all dynamic: the network has no size-dependent ops, and ONNX Runtime
  matches PyTorch (max |diff| ~1e-7) at other multiples of ``2**depth`` too. The metadata is the
  model's contract (``eyelip.model.spec.ModelSpec.to_strings``: ``input_size``, ``size``,
  ``targets``, ``prior``, ...) and says how to feed it, so a consumer needs only onnxruntime.
- TorchScript: traced and frozen, loads with ``torch.jit.load`` without eyelip installed.
  ``torch.jit`` is deprecated in PyTorch 2.13 but still the only single-file format that loads
  without the defining code *and* runs with plain ``torch``; the warnings are silenced here only.
- ``export_checked``: both files, published only when both match PyTorch on test images (the parity
  gate), with their CPU latency. The registry gate is :mod:`eyelip.release.registry`.
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eyelip import atomic
from eyelip.data.preprocess import to_nchw
from eyelip.errors import EyelipError
from eyelip.model.spec import ModelSpec
from eyelip.model.unet import UNet

OPSET = 17
THRESHOLD = 0.5
# Parity limits: both exports must reproduce PyTorch's probabilities and masks on the test images.
MAX_PROB_DIFF, MIN_IDENTICAL = 1e-4, 0.999
METADATA = {
    "normalisation": "RGB and prior channels /255, NCHW",
    "image_resize_rule": "eyelip.data.preprocess.decode_input: JPEG draft decode, then bilinear (antialiased) "
    "resize to input_size x input_size; then the prior's channels (eyelip.data.prior)",
    "mask_resize_rule": "sigmoid(logits) -> probabilities, bilinear resize to the photo's size, then "
    ">= threshold (eyelip predict); ground truth: box-filter coverage >= 0.5 "
    "(eyelip.data.preprocess.resize_mask)",
    "output": "logits (N, C, size, size), one channel per target; probability = sigmoid(logits)",
}


def export_onnx(model: UNet, path: str | Path, spec: ModelSpec, extra_meta: dict[str, Any]) -> None:
    """Write ``model`` as ONNX with ``spec`` and ``extra_meta`` (where it came from) as metadata;
    non-string values are stored as JSON."""
    import onnx

    model = model.eval()
    example = torch.zeros(1, model.in_channels, spec.input_size, spec.input_size)
    axes = {0: "batch", 2: "height", 3: "width"}
    meta = {**spec.to_strings(), **METADATA, "threshold": THRESHOLD, **extra_meta}
    with atomic.atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is deprecated, not broken
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": axes, "logits": axes},
            )
        proto = onnx.load(str(tmp))
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))


def export_torchscript(model: UNet, path: str | Path, input_size: int) -> None:
    """Trace at (1, in_channels, input_size, input_size), freeze (folds BatchNorm into the convs) and save."""
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in 2.13, still supported
        warnings.simplefilter("ignore", FutureWarning)
        with torch.no_grad():
            traced = torch.jit.freeze(
                torch.jit.trace(model, torch.zeros(1, model.in_channels, input_size, input_size), check_trace=False)
            )
        with atomic.atomic_path(path) as tmp:
            torch.jit.save(traced, str(tmp))


class TorchScriptPredictor:
    """A saved TorchScript model behind the Predictor call signature (uint8 NHWC -> probabilities)."""

    def __init__(self, path: str | Path, size: int, targets: list[str]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            self.module = torch.jit.load(str(path), map_location="cpu")
        self.size, self.targets = size, targets

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(self.module(torch.from_numpy(to_nchw(images)))).numpy()


def parity(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    threshold: float = THRESHOLD,
    batch_size: int = 16,
) -> dict[str, float]:
    """Compare two predictors on uint8 model inputs (N, S, S, K): probability differences and mask agreement."""
    max_diff, abs_sum, same, total = 0.0, 0.0, 0, 0
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size])
        ref, cand = reference(batch), candidate(batch)
        diff = np.abs(ref.astype(np.float64) - cand)
        max_diff = max(max_diff, float(diff.max()))
        abs_sum += float(diff.sum())
        same += int(((ref >= threshold) == (cand >= threshold)).sum())
        total += ref.size
    return {
        "images": len(images),
        "max_abs_prob_diff": max_diff,
        "mean_abs_prob_diff": abs_sum / total,
        "identical_mask_fraction": same / total,
        "threshold": threshold,
    }


def latency(fn: Callable[[np.ndarray], Any], batch: np.ndarray, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn(batch)`` in milliseconds, after ``warmup`` untimed calls (TorchScript's
    profiling executor optimises the graph only after its first two runs)."""
    for _ in range(warmup):
        fn(batch)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - tic)
    return round(statistics.median(times) * 1000, 3)


def measure_latency(
    model: UNet,
    onnx_path: str | Path,
    torchscript_path: str | Path,
    input_size: int,
    batch_sizes: tuple[int, ...] = (1, 32),
    repeats: int = 10,
) -> dict[str, Any]:
    """CPU latency (median ms per call, preprocessing excluded) of eager PyTorch, ONNX Runtime and
    TorchScript at each batch size, interleaved in one process with the same thread count."""
    import onnxruntime as ort

    threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # ORT's idle workers otherwise busy-wait after each run and steal the cores the next runtime is timed on.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(torchscript_path), map_location="cpu")
    model = model.eval()

    def eager(x: np.ndarray) -> Any:
        with torch.no_grad():
            return model(torch.from_numpy(x))

    def jit(x: np.ndarray) -> Any:
        with torch.no_grad():
            return scripted(torch.from_numpy(x))

    runners = {"torch_eager": eager, "onnxruntime": lambda x: session.run(None, {"image": x}), "torchscript": jit}
    rng = np.random.default_rng(0)
    result: dict[str, dict[str, float]] = {name: {} for name in runners}
    for n in batch_sizes:
        batch = rng.random((n, model.in_channels, input_size, input_size), dtype=np.float32)
        # Fewer repeats for big batches: each call already averages over n images.
        reps = repeats if n == 1 else max(1, repeats // 3)
        for name, fn in runners.items():
            result[name][f"b{n}"] = latency(fn, batch, reps)
    speedup = {
        name: {key: round(result["torch_eager"][key] / ms, 3) for key, ms in result[name].items()}
        for name in runners
        if name != "torch_eager"
    }
    return {"threads": threads, "latency_ms": result, "speedup_vs_eager": speedup}


def check_parity(name: str, result: dict[str, float]) -> None:
    if not (result["max_abs_prob_diff"] < MAX_PROB_DIFF and result["identical_mask_fraction"] > MIN_IDENTICAL):
        raise EyelipError(
            f"{name} export disagrees with PyTorch on {result['images']} test images: max |prob diff| "
            f"{result['max_abs_prob_diff']:.3g} (limit {MAX_PROB_DIFF:g}), identical mask pixels "
            f"{result['identical_mask_fraction']:.5f} (limit > {MIN_IDENTICAL}); nothing was exported"
        )


def export_checked(
    model: UNet,
    reference: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    onnx_path: str | Path,
    torchscript_path: str | Path,
    spec: ModelSpec,
    meta: dict[str, Any],
    repeats: int = 10,
) -> dict[str, Any]:
    """Write ``onnx_path`` and ``torchscript_path`` only if both pass parity with ``reference`` on
    ``images`` (uint8 model inputs); returns the parity results (``parity``) and :func:`measure_latency`."""
    from eyelip.inference.predictors import OnnxPredictor

    # Both files stay temporary until both pass parity: a failed check publishes neither.
    with atomic.atomic_path(onnx_path) as onnx_tmp, atomic.atomic_path(torchscript_path) as ts_tmp:
        export_onnx(model, onnx_tmp, spec, meta)
        export_torchscript(model, ts_tmp, spec.input_size)
        checks = {
            "onnxruntime": parity(reference, OnnxPredictor(onnx_tmp), images),
            "torchscript": parity(reference, TorchScriptPredictor(ts_tmp, spec.size, spec.targets), images),
        }
        for fmt, result in checks.items():
            check_parity(fmt, result)
        speed = measure_latency(model, onnx_tmp, ts_tmp, spec.input_size, repeats=repeats)
    return {"parity": checks, **speed}
