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
- int8 ONNX (``quantize_int8``): static quantization (QDQ: int8 per-channel weights, uint8
  activations calibrated on training images), several times faster than eager PyTorch on CPUs with
  VNNI; an approximation, so not held to the parity limits: the export stage records its test IoU
  beside the model's instead, and registers only the fp32 model.
- ``export_checked``: the fp32 files, published only when both match PyTorch on test images (the
  parity gate), with their CPU latency. The registry gate is :mod:`eyelip.release.registry`.

Latency is measured as a user would run each runtime, on the same threads: eager PyTorch under
``torch.inference_mode`` in the faster of NCHW and channels-last memory formats, ONNX Runtime with
``ORT_OPTIONS`` (its defaults, spelled out and recorded in the metrics).
"""

from __future__ import annotations

import contextlib
import copy
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
# ONNX Runtime's defaults, written down so the metrics say what was measured. Spinning idle workers
# wait for the next op without a sleep and wake-up: 5-10% faster at batch 1 on 2 cores.
ORT_OPTIONS = {"graph_optimization_level": "ORT_ENABLE_ALL", "execution_mode": "ORT_SEQUENTIAL", "allow_spinning": True}
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


def ort_session(path: str | Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with ``ORT_OPTIONS`` on ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_OPTIONS["graph_optimization_level"])
    options.execution_mode = getattr(ort.ExecutionMode, ORT_OPTIONS["execution_mode"])
    options.add_session_config_entry("session.intra_op.allow_spinning", str(int(ORT_OPTIONS["allow_spinning"])))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure_latency(
    model: UNet,
    onnx_path: str | Path,
    torchscript_path: str | Path,
    input_size: int,
    batch_sizes: tuple[int, ...] = (1, 32),
    repeats: int = 10,
    int8_path: str | Path | None = None,
) -> dict[str, Any]:
    """CPU latency (median ms per call, preprocessing excluded) of eager PyTorch, ONNX Runtime,
    TorchScript (and the int8 ONNX model when given) at each batch size, one runtime after the other
    in one process with the same thread count."""
    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(torchscript_path), map_location="cpu")
    model = model.eval()
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def eager(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    def eager_channels_last(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return channels_last(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))

    def jit(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return scripted(torch.from_numpy(x))

    def onnx_runner(path: str | Path) -> Callable[[np.ndarray], Any]:
        session = ort_session(path, threads)
        return lambda x: session.run(None, {"image": x})

    runners = {
        "torch_eager_nchw": eager,
        "torch_eager_channels_last": eager_channels_last,
        "onnxruntime": onnx_runner(onnx_path),
        "torchscript": jit,
        **({"onnxruntime_int8": onnx_runner(int8_path)} if int8_path is not None else {}),
    }
    rng = np.random.default_rng(0)
    timed: dict[str, dict[str, float]] = {name: {} for name in runners}
    for n in batch_sizes:
        batch = rng.random((n, model.in_channels, input_size, input_size), dtype=np.float32)
        # Fewer repeats for big batches: each call already averages over n images.
        reps = repeats if n == 1 else max(1, repeats // 3)
        for name, fn in runners.items():
            timed[name][f"b{n}"] = latency(fn, batch, reps)
    # Eager as a user would run it: in the faster memory format at each batch size.
    formats = {
        key: min(("nchw", "channels_last"), key=lambda f: timed[f"torch_eager_{f}"][key])
        for key in timed["onnxruntime"]
    }
    result = {"torch_eager": {key: timed[f"torch_eager_{f}"][key] for key, f in formats.items()}, **timed}
    speedup = {
        name: {key: round(result["torch_eager"][key] / ms, 3) for key, ms in result[name].items()}
        for name in ("onnxruntime", "torchscript", "onnxruntime_int8")
        if name in result
    }
    return {
        "threads": threads,
        "torch_eager": {"memory_format": formats, "mode": "torch.inference_mode"},
        "onnxruntime_options": {**ORT_OPTIONS, "intra_op_num_threads": threads},
        "latency_ms": result,
        "speedup_vs_eager": speedup,
    }


def quantize_int8(onnx_path: str | Path, int8_path: str | Path, calibration: np.ndarray) -> None:
    """Write ``onnx_path`` statically quantized to int8 (QDQ format: per-channel int8 weights, uint8
    activations whose ranges are the min/max over ``calibration``, uint8 model inputs), with its metadata
    (so ``eyelip predict`` reads it) and how it was quantized."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    class Reader:  # onnxruntime's CalibrationDataReader protocol: one input dict per call, None at the end
        def __init__(self) -> None:
            self.images = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.images, None)
            return None if image is None else {"image": to_nchw(image[None])}

    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"  # shapes inferred and constants folded, as the quantizer expects
        quant_pre_process(str(onnx_path), str(folded), skip_symbolic_shape=True)
        with atomic.atomic_path(int8_path) as out:
            quantize_static(
                str(folded),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
            proto = onnx.load(str(out))
            del proto.metadata_props[:]
            proto.metadata_props.extend(onnx.load(str(onnx_path), load_external_data=False).metadata_props)
            entry = proto.metadata_props.add()
            entry.key = "quantization"
            entry.value = f"int8 QDQ, per-channel weights, uint8 activations calibrated on {len(calibration)} images"
            onnx.save(proto, str(out))


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
    int8: tuple[str | Path, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write ``onnx_path`` and ``torchscript_path`` only if both pass parity with ``reference`` on
    ``images`` (uint8 model inputs); with ``int8`` (a path and calibration images), the int8 model too
    (its agreement with ``reference`` recorded, not gated); returns the parity results (``parity``) and
    :func:`measure_latency`."""
    from eyelip.inference.predictors import OnnxPredictor

    # The files stay temporary until both fp32 exports pass parity: a failed check publishes none.
    with contextlib.ExitStack() as files:
        onnx_tmp, ts_tmp = (files.enter_context(atomic.atomic_path(p)) for p in (onnx_path, torchscript_path))
        int8_tmp = files.enter_context(atomic.atomic_path(int8[0])) if int8 else None
        export_onnx(model, onnx_tmp, spec, meta)
        export_torchscript(model, ts_tmp, spec.input_size)
        checks = {
            "onnxruntime": parity(reference, OnnxPredictor(onnx_tmp), images),
            "torchscript": parity(reference, TorchScriptPredictor(ts_tmp, spec.size, spec.targets), images),
        }
        for fmt, result in checks.items():
            check_parity(fmt, result)
        agreement = {}
        if int8 is not None:
            quantize_int8(onnx_tmp, int8_tmp, int8[1])
            agreement = {"int8_agreement": parity(reference, OnnxPredictor(int8_tmp), images)}
        speed = measure_latency(model, onnx_tmp, ts_tmp, spec.input_size, repeats=repeats, int8_path=int8_tmp)
    return {"parity": checks, **agreement, **speed}
