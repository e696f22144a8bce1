"""What the schema of ``params.yaml`` shares: the base models, reading the file, one-line errors.

The schema is one frozen pydantic model per section, the one place of every key's type, range, allowed
values and default, in a module per section (:mod:`eyelip.params.train`, ...), so that a stage imports,
and so depends on (dvc.yaml), the schema of the sections it reads only. A stage declares those sections
in a :class:`View` (``eyelip.stage.run``); :class:`eyelip.params.whole.Params` is the whole file, with
the rules that join sections, validated by the first stage, ``check-data``, and ``eyelip params check``.
Unknown keys are rejected at every level, a misspelt one naming the nearest valid key, and every error is
one line naming the dotted key as written, the value and what is allowed (:class:`~eyelip.errors.ParamError`).
Types are strict: ``smooth: yes`` is not 1.0 and ``epochs: "5"`` is not 5.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from eyelip.errors import ParamError

PARAMS_FILE = "params.yaml"
SCHEMA_FILE = "params.schema.json"

# Settings that decide how fast or where a result is computed, never the result itself. They live in
# one section that no stage depends on, so changing them re-runs nothing; the resume fingerprint
# ignores them, and `eyelip results` groups runs across them.
RUNTIME = "runtime"
# Where those settings used to live: an old params file gets an error naming the new key.
MOVED = {
    "preprocess.n_jobs": "runtime.n_jobs",
    "preprocess.backend": "runtime.backend",
    "train.threads": "runtime.threads",
    "train.device": "runtime.device",
    "train.distributed": "runtime.distributed",
    "train.compile": "runtime.compile",
}


class Section(BaseModel):
    """Strict (no ``yes`` -> 1.0, no ``"5"`` -> 5), closed (unknown keys are errors) and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class File(Section):
    """A params file, validated: its fields are sections (each with its section model's default)."""

    _written: dict[str, Any] = PrivateAttr(default_factory=dict)  # flattened, the whole file as read

    def flat(self) -> dict[str, Any]:
        """Every key as MLflow logs it (``train.lr``): the value as written (``rotate: 10`` stays 10, not the
        parsed 10.0, so runs compare with those logged before the schema), the default where left out (for
        the sections this model holds: all of them for :class:`~eyelip.params.whole.Params`)."""
        return {**flatten(self.model_dump(exclude_none=True)), **self._written}


class View(File):
    """The sections of params.yaml that one stage reads, declared as fields (``train: TrainParams =
    TrainParams()``); the file's other sections are left to ``check-data``, which validates it whole."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


F = TypeVar("F", bound=File)


def read(path: str | os.PathLike[str] = PARAMS_FILE) -> Any:
    """The params file's YAML, not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: not found; run from the project root, where params.yaml lives")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamError(f"{path}: not valid YAML: {exc}") from exc


def validate(model: type[F], data: Any, source: str | os.PathLike[str] = PARAMS_FILE) -> F:
    """Validate an already-read params mapping as ``model``; ``source`` names the file in errors about it."""
    if not isinstance(data, Mapping):
        raise ParamError(f"{source}: expected a mapping of sections (data:, resize:, ...)")
    for old, new in MOVED.items():
        section, key = old.split(".")
        if isinstance(data.get(section), Mapping) and key in data[section]:
            raise ParamError(
                f"{old}: moved to {new} in {source} (settings that never change results live in "
                f"`{RUNTIME}:`, which no stage depends on); move the key there"
            )
    try:
        params = model.model_validate(data)
        params._written = flatten(data)
        return params
    except ValidationError as exc:  # the schema's types and ranges
        message = _message(exc, data, model)
    except ParamError as exc:  # its rules across keys, raised by the validators as they are
        message = str(exc)
    raise ParamError(f"{source}: {message}")


def load(model: type[F], path: str | os.PathLike[str] = PARAMS_FILE) -> F:
    """The params file, validated as ``model``; a ParamError names the first bad key (and the file)."""
    return validate(model, read(path), path)


def keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted leaf keys of a params mapping; the user-named entries of data.targets/aux_targets are leaves
    of their mapping, not keys."""
    out: list[str] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and name not in ("data.targets", "data.aux_targets"):
            out += keys(value, f"{name}.")
        else:
            out.append(name)
    return out


# What pydantic's error types mean, in the words of params.yaml's comments.
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "list_type": "a list",
    "none_required": "nothing (null)",
}
_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def _message(exc: ValidationError, data: Mapping[str, Any], model: type[BaseModel]) -> str:
    """The first error as one line; a union's alternatives are joined (``a number or a list``)."""
    errors = exc.errors(include_url=False)
    key, value = _located(errors[0], data)
    same = [e for e in errors if _located(e, data)[0] == key]
    kind = errors[0]["type"]
    if kind == "extra_forbidden":
        *parent, name = key.split(".")
        fields = _fields_at(model, parent)
        near = difflib.get_close_matches(name, fields, n=1, cutoff=0.5)
        where = ".".join(parent)
        hint = (
            f"did you mean {'.'.join([*parent, near[0]])}?"
            if near
            else f"expected one of {', '.join(fields)}" + (f" in {where}" if where else "")
        )
        return f"{key}: unknown key; {hint}"
    if kind == "missing":
        return f"{key}: missing; add it"
    if len(same) > 1:
        wanted = " or ".join(dict.fromkeys(_expected(e) for e in same))
        return f"{key}: expected {wanted}, got {value!r}"
    return f"{key}: expected {_expected(errors[0])}, got {value!r}"


def _expected(error: Mapping[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind == "literal_error":
        return f"one of {ctx['expected'].replace(' or ', ', ')}"
    if kind in _BOUNDS:
        sign, name = _BOUNDS[kind]
        return f"a value {sign} {ctx[name]:g}"
    if kind == "too_short":
        return "a non-empty " + (
            "mapping" if error.get("input") is not None and isinstance(error["input"], Mapping) else "list"
        )
    if kind == "string_pattern_mismatch":
        return "a non-blank string" + (" without '/', ':', '@' or a quote" if "/:@" in ctx.get("pattern", "") else "")
    return error["msg"].lower()


def _located(error: Mapping[str, Any], data: Any) -> tuple[str, Any]:
    """The dotted key of an error as the user wrote it and the value there. pydantic's ``loc`` also holds
    a union's branch names (``int``, ``list[float]``), which are not keys: the walk stops at them."""
    path, node = [], data
    loc = list(error["loc"])
    for i, part in enumerate(loc):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]  # the key names the list; the value shows the bad item
            continue
        else:
            if error["type"] == "missing" and i == len(loc) - 1:
                path.append(str(part))
            break
        path.append(str(part))
    return ".".join(path), node


def _fields_at(model: Any, path: list[str]) -> list[str]:
    for part in path:
        model = model.model_fields[part].annotation
    return list(model.model_fields)


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


def renamed(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flattened params with keys from before :data:`MOVED` under their new names (old MLflow runs)."""
    return {MOVED.get(key, key): value for key, value in flat.items()}
