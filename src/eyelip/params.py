"""Reading and validating ``params.yaml``: every error names the dotted key and what is allowed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from eyelip.errors import ParamError

PARAMS_FILE = "params.yaml"
_MISSING = object()

# Settings that decide how fast or where a result is computed, never the result itself. They live in
# one section that no stage depends on, so changing them re-runs nothing; the resume fingerprint
# ignores them, and `eyelip results` groups runs across them.
RUNTIME = "runtime"
# Where those settings used to live: an old params file gets an error naming the new key.
MOVED = {"preprocess.n_jobs": "runtime.n_jobs", "preprocess.backend": "runtime.backend",
         "train.threads": "runtime.threads", "train.device": "runtime.device",
         "train.distributed": "runtime.distributed", "train.compile": "runtime.compile"}


def load(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: not found; run from the project root, where params.yaml lives")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping of sections (data:, resize:, ...)")
    for old, new in MOVED.items():
        if get(data, old, None) is not None:
            raise ParamError(f"{old}: moved to {new} in {path} (settings that never change results live in "
                             f"`{RUNTIME}:`, which no stage depends on); move the key there")
    return data


def renamed(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flattened params with keys from before :data:`MOVED` under their new names (old MLflow runs)."""
    return {MOVED.get(key, key): value for key, value in flat.items()}


def get(params: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    """Value at a dotted key such as ``resize.size``; raises ParamError if absent and no default."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is not _MISSING:
                return default
            raise ParamError(f"{key}: missing in params.yaml")
        node = node[part]
    return node


def integer(params: Mapping[str, Any], key: str, minimum: int | None = None, default: Any = _MISSING) -> int:
    value = get(params, key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(f"{key}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ParamError(f"{key}: must be >= {minimum}, got {value}")
    return value


def number(params: Mapping[str, Any], key: str, minimum: float | None = None,
           maximum: float | None = None, default: Any = _MISSING) -> float:
    value = get(params, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(f"{key}: expected a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ParamError(f"{key}: must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ParamError(f"{key}: must be <= {maximum}, got {value}")
    return float(value)


def boolean(params: Mapping[str, Any], key: str, default: Any = _MISSING) -> bool:
    value = get(params, key, default)
    if not isinstance(value, bool):
        raise ParamError(f"{key}: expected true or false, got {value!r}")
    return value


def choice(params: Mapping[str, Any], key: str, options: tuple[str, ...], default: Any = _MISSING) -> str:
    value = get(params, key, default)
    if value not in options:
        raise ParamError(f"{key}: expected one of {', '.join(options)}; got {value!r}")
    return value


def section(params: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A mapping whose keys must all be in ``allowed`` (catches typos such as ``train.l_r``)."""
    value = get(params, key, {})
    if not isinstance(value, Mapping):
        raise ParamError(f"{key}: expected a mapping, got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ParamError(f"{key}.{unknown[0]}: unknown key; expected one of {', '.join(allowed)}")
    return dict(value)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``: the keys DVC and MLflow show."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
