"""Deployable copies of the trained U-Net, proof that they compute the same thing, and the registry gate.

- ONNX (opset 17, legacy TorchScript-based exporter: the dynamo exporter needs onnxscript, which is
  not a dependency). Input ``image`` float32 (N, 3 + P, H, W) in [0, 1] (P channels of the ``prior``
  metadata after R, G, B), output ``logits
  (N, C, H/k, W/k), k = ``input_size / size`` (1 unless trained with ``resize.input_scale``).
  Batch, height and width are all dynamic: the network has no size-dependent ops, and ONNX Runtime
  matches PyTorch (max |diff| ~1e-7) at other multiples of ``2**depth`` too. The metadata
  (``input_size``, ``size``, ``targets``, ...) says how to feed it, so a consumer needs only
  onnxruntime.
- TorchScript: traced and frozen, loads with ``torch.jit.load`` without eyelip installed.
  ``torch.jit`` is deprecated in PyTorch 2.13 but still the only single-file format that loads
  without the defining code *and* runs with plain ``torch``; the warnings are silenced here only.
- ``register``: MLflow Model Registry with a ``candidate`` alias (always the newest version) and a
  ``champion`` alias that moves only when the new version's test IoU is strictly higher.
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
from eyelip.model.unet import UNet

OPSET = 17
THRESHOLD = 0.5
METADATA = {
    "normalisation": "RGB and prior channels /255, NCHW",
    "image_resize_rule": "eyelip.data.preprocess.decode_input: JPEG draft decode, then bilinear (antialiased) "
                         "resize to input_size x input_size; then the prior's channels (eyelip.data.prior)",
    "mask_resize_rule": "sigmoid(logits) -> probabilities, bilinear resize to the photo's size, then "
                        ">= threshold (eyelip predict); ground truth: box-filter coverage >= 0.5 "
                        "(eyelip.data.preprocess.resize_mask)",
    "output": "logits (N, C, size, size), one channel per target; probability = sigmoid(logits)",
}


def export_onnx(model: UNet, path: str | Path, size: int, targets: list[str],
                extra_meta: dict[str, Any], input_size: int | None = None) -> None:
    """Write ``model`` as ONNX with eyelip metadata; non-string metadata values are stored as JSON.
    ``size`` is the output (mask) size, ``input_size`` the image size it takes (default ``size``)."""
    import onnx

    model = model.eval()
    input_size = input_size or size
    example = torch.zeros(1, model.in_channels, input_size, input_size)
    axes = {0: "batch", 2: "height", 3: "width"}
    meta = {"size": size, "input_size": input_size, "targets": targets, **METADATA, "threshold": THRESHOLD,
            **extra_meta}
    with atomic.atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is deprecated, not broken
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": axes, "logits": axes})
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
            traced = torch.jit.freeze(torch.jit.trace(model, torch.zeros(1, model.in_channels, input_size, input_size),
                                                       check_trace=False))
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


def parity(reference: Callable[[np.ndarray], np.ndarray], candidate: Callable[[np.ndarray], np.ndarray],
           images: np.ndarray, threshold: float = THRESHOLD, batch_size: int = 16) -> dict[str, float]:
    """Compare two predictors on uint8 model inputs (N, S, S, K): probability differences and mask agreement."""
    max_diff, abs_sum, same, total = 0.0, 0.0, 0, 0
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size])
        ref, cand = reference(batch), candidate(batch)
        diff = np.abs(ref.astype(np.float64) - cand)
        max_diff = max(max_diff, float(diff.max()))
        abs_sum += float(diff.sum())
        same += int(((ref >= threshold) == (cand >= threshold)).sum())
        total += ref.size
    return {"images": len(images), "max_abs_prob_diff": max_diff, "mean_abs_prob_diff": abs_sum / total,
            "identical_mask_fraction": same / total, "threshold": threshold}


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


def measure_latency(model: UNet, onnx_path: str | Path, torchscript_path: str | Path, input_size: int,
                    batch_sizes: tuple[int, ...] = (1, 32), repeats: int = 10) -> dict[str, Any]:
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
    speedup = {name: {key: round(result["torch_eager"][key] / ms, 3) for key, ms in result[name].items()}
               for name in runners if name != "torch_eager"}
    return {"threads": threads, "latency_ms": result, "speedup_vs_eager": speedup}


def register(model_uri: str, name: str, test_iou: float, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Register ``model_uri`` (``models:/<model_id>`` or ``runs:/...``) as a new version of ``name``
    in the current MLflow registry, alias it ``candidate``, and move ``champion`` to it only if its
    test IoU is strictly higher than the champion's ``test_iou`` tag (a champion without the tag,
    e.g. aliased by hand, counts as beaten: it carries no evidence). Prints and returns the decision."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    version = mlflow.register_model(model_uri, name, tags={"test_iou": f"{test_iou:.6f}", **(tags or {})})
    client.set_registered_model_alias(name, "candidate", version.version)
    new = f"v{version.version}"
    champion = client.get_registered_model(name).aliases.get("champion")
    decision: dict[str, Any] = {"registered_model": name, "version": int(version.version), "test_iou": test_iou,
                                "previous_champion": None, "previous_champion_test_iou": None}
    if champion is None:
        promote, reason = True, f"champion: {new} test IoU {test_iou:.4f} (no champion before): promoted"
    else:
        old = client.get_model_version(name, champion)
        old_iou = float(old.tags["test_iou"]) if "test_iou" in old.tags else None
        decision.update(previous_champion=int(champion), previous_champion_test_iou=old_iou)
        if old_iou is None:
            promote = True
            reason = f"champion: {new} test IoU {test_iou:.4f}; v{champion} had no test_iou tag: promoted"
        elif test_iou > old_iou:
            promote, reason = True, f"champion: {new} test IoU {test_iou:.4f} > v{champion} {old_iou:.4f}: promoted"
        else:
            promote, reason = False, f"kept v{champion} ({old_iou:.4f} >= {test_iou:.4f}); {new} is candidate only"
    if promote:
        client.set_registered_model_alias(name, "champion", version.version)
    print(f"registry {name!r}: {reason}")
    decision.update(promoted=promote, champion=int(version.version) if promote else int(champion), message=reason)
    return decision
