"""What ran a pipeline run: the locked environment, the packages that decide results, the CPU and
the instruction sets torch uses on it, threads and device.

Recorded as ``env.*`` tags on each new MLflow run (tags, not params: params are the knobs a run was
given, these are facts about where it ran) and by the training stage in ``metrics/environment.json``
(git-tracked beside the metrics it produced), so ``eyelip report`` and ``eyelip results`` can tell
runs that differ by environment from runs that differ by params. The same commit and params can
score differently on a CPU with AVX512-BF16 (bf16 autocast) than on one with AVX2 only.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

PREFIX = "env."
FILE = "metrics/environment.json"
LOCK = "requirements.lock"
# The packages whose versions change the numbers: tensors, arrays and resizing, export, the pipeline.
PACKAGES = ("torch", "numpy", "pillow", "onnxruntime", "dvc", "mlflow")
# Instruction sets the kernels of torch and oneDNN pick from (/proc/cpuinfo names).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def lock_hash(prefix: str | Path = sys.prefix) -> str:
    """sha256 (12 hex digits) of the requirements.lock this venv was synced from, as ``./dev``
    stamped it in ``<venv>/.installed``; "none" for an environment that ``./dev`` did not install."""
    try:
        lines = (Path(prefix) / ".installed").read_text().splitlines()
    except OSError:
        return "none"
    digest = [line.split()[0] for line in lines if line.split()[-1:] == [LOCK]]
    return digest[0][:12] if digest else "none"


def cpu_info(path: str | Path = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """The CPU's model name and which of CPU_FLAGS it has (Linux; elsewhere the platform's name)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", platform.machine()), [f for f in CPU_FLAGS if f in flags]


def device_name(requested: str) -> str:
    """``runtime.device`` as training resolves it (auto: CUDA when present), with the GPU's name."""
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested
    return f"cuda ({torch.cuda.get_device_name()})" if device == "cuda" and torch.cuda.is_available() else device


def collect(device: str = "auto") -> dict[str, str]:
    """This process's environment as ``env.*`` tags (strings); ``device``: ``runtime.device``."""
    import torch

    model, flags = cpu_info()
    env = {"lock": lock_hash(), "python": platform.python_version()}
    for name in PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = "absent"
    env |= {
        "cpu": model,
        "cpu_flags": " ".join(flags) or "none found",
        # The kernels torch dispatches to (capped by ATEN_CPU_CAPABILITY) and native bf16 (autocast).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": str(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
        "threads": str(torch.get_num_threads()),
        "device": device_name(device),
    }
    return {PREFIX + k: v for k, v in env.items()}


def cpu_label(tags: Mapping[str, str]) -> str:
    """Where a run's minutes were spent, in a few words: the device (a GPU's name) or the CPU model
    with the kernels torch ran on it (capped by ``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``),
    native bf16 and threads; "" for a run that recorded no environment."""
    cpu = tags.get(PREFIX + "cpu")
    if not cpu:
        return ""
    device = tags.get(PREFIX + "device", "cpu")
    if device != "cpu":
        return device
    parts = [f"{tags.get(PREFIX + 'cpu_capability', '?')} kernels"]
    isa = tags.get(PREFIX + "onednn_max_isa", "default")
    if isa != "default":
        parts.append(f"oneDNN up to {isa}")
    parts.append("bf16" if tags.get(PREFIX + "cpu_bf16") == "True" else "no bf16")
    if PREFIX + "threads" in tags:
        parts.append(f"{tags[PREFIX + 'threads']} threads")
    return f"{cpu} ({', '.join(parts)})"


def read(text: str | None) -> dict[str, str]:
    """A ``metrics/environment.json`` text's tags; {} for none (a run from before it was recorded)."""
    return {k: str(v) for k, v in json.loads(text).items()} if text else {}


def differences(old: Mapping[str, str], new: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(key, old, new)`` for each ``env.*`` key whose values differ; a key missing on one side
    reads "—". Empty when either side recorded nothing: no claim either way."""
    if not old or not new:
        return []
    keys = sorted(k for k in {*old, *new} if k.startswith(PREFIX))
    return [(k, old.get(k, "—"), new.get(k, "—")) for k in keys if old.get(k) != new.get(k)]
