"""``params.yaml``'s schema: one frozen pydantic model per section, the one place of every key's type,
range, allowed values and default.

:func:`load` reads and validates the whole file once (each stage through ``eyelip.stage.run``, and
``eyelip params check``) and returns a typed :class:`Params`; library functions take its section models.
Unknown keys are rejected at every level, a misspelt one naming the nearest valid key, and every error is
one line naming the dotted key as written, the value and what is allowed (:class:`~eyelip.errors.ParamError`).
Types are strict: ``smooth: yes`` is not 1.0 and ``epochs: "5"`` is not 5.

Editors get completion, hover docs and red squiggles from ``params.schema.json``, which
:func:`json_schema` generates from these models with each key's description taken from its comment in
``params.yaml`` (the one source of both); tests/test_params.py keeps the committed file in sync.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from eyelip.data.layout import PARTS
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

Part = Literal[PARTS]  # type: ignore[valid-type]  # CelebAMask-HQ's part names (eyelip.data.layout)
Targets = dict[str, Annotated[list[Part], Field(min_length=1)]]
Rule = Literal["union", "label_map"]
OnError = Literal["fail", "skip"]
Prior = Literal["none", "facemesh", "facemesh_flip"]
Norm = Literal["batch", "group", "none"]
Block = Literal["plain", "residual", "depthwise"]
Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["cosine", "constant"]
Precision = Literal["auto", "bf16", "fp32"]
Reduction = Literal["per_image", "per_batch"]
Backend = Literal["loky", "threading", "sequential"]
Device = Literal["auto", "cpu", "cuda"]
Unit = Annotated[float, Field(ge=0, le=1)]
Pixels = Annotated[int, Field(ge=0, le=4096)]


class Section(BaseModel):
    """Strict (no ``yes`` -> 1.0, no ``"5"`` -> 5), closed (unknown keys are errors) and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SampleParams(Section):
    n: int = Field(600, ge=1)
    seed: int = Field(0, ge=0)
    image_size: int = Field(512, ge=16)
    mask_size: int = Field(512, ge=16)


class DataParams(Section):
    root: str = Field("data/sample.zip", min_length=1, pattern=r"\S")
    targets: Targets = Field({"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}, min_length=1)
    aux_targets: Targets = {}
    rule: Rule = "union"
    on_error: OnError = "fail"

    @model_validator(mode="after")
    def _distinct_names(self) -> DataParams:
        clash = sorted(set(self.aux_targets) & set(self.targets))
        if clash:
            raise ParamError(f"data.aux_targets: {clash} are already data.targets; give auxiliary targets other names")
        return self


class ResizeParams(Section):
    size: int = Field(128, ge=8)
    input_scale: int = Field(1, ge=1)
    train_scale: int = Field(1, ge=1)
    prior: Prior = "none"

    @model_validator(mode="after")
    def _train_scale_divides(self) -> ResizeParams:
        if self.input_scale % self.train_scale:
            raise ParamError(
                f"resize.train_scale: {self.train_scale} must divide resize.input_scale "
                f"({self.input_scale}): the network predicts at the training size from photos at "
                f"least that large"
            )
        return self


class SplitParams(Section):
    seed: int = Field(0, ge=0)
    # A count (int) or a fraction (float): the type decides, so it is kept as written.
    train: int | float = 0.8
    val: int | float = 0.1
    test: int | float = 0.1
    folds: int = Field(0, ge=0)
    fold: int = Field(0, ge=0)

    @field_validator("train", "val", "test", mode="before")
    @classmethod
    def _count_or_fraction(cls, value: Any, info: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < 0
            or (isinstance(value, float) and value > 1)
        ):
            raise ParamError(
                f"split.{info.field_name}: expected a count (e.g. 8100) or a fraction (e.g. 0.8), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _sizes(self) -> SplitParams:
        if self.folds == 1:
            raise ParamError("split.folds: expected 0 (off) or 2 or more folds, got 1")
        if self.folds and self.fold >= self.folds:
            raise ParamError(f"split.fold: expected a fold index 0..{self.folds - 1}, got {self.fold}")
        if self.folds:
            return self  # train and test are unused; val is a count or a share of the rest
        sizes = (self.train, self.val, self.test)
        if len({type(v) for v in sizes}) > 1:
            raise ParamError(
                "split: give train, val and test all as counts (8100) or all as fractions (0.8), not mixed"
            )
        if isinstance(self.train, float) and sum(sizes) > 1 + 1e-9:
            raise ParamError(f"split: fractions train+val+test = {sum(sizes):g} > 1")
        return self


class ModelParams(Section):
    base_width: int = Field(16, ge=1)
    depth: int = Field(4, ge=1)
    norm: Norm = "batch"
    dropout: float = Field(0.0, ge=0, lt=1)
    block: Block = "plain"
    prior_gate: int = Field(0, ge=0)


class LossParams(Section):
    jaccard: float = Field(1.0, ge=0)
    bce: float = Field(0.0, ge=0)
    dice: float = Field(0.0, ge=0)
    lovasz: float = Field(0.0, ge=0)
    smooth: float = Field(1.0, gt=0)
    reduction: Reduction = "per_image"
    pos_weight: Annotated[float, Field(gt=0)] | list[Annotated[float, Field(gt=0)]] | None = None

    @model_validator(mode="after")
    def _some_weight(self) -> LossParams:
        if not any((self.jaccard, self.bce, self.dice, self.lovasz)):
            raise ParamError("train.loss: all weights (jaccard, bce, dice, lovasz) are 0; at least one must be > 0")
        return self


class AugmentParams(Section):
    hflip: Unit = 0.0
    brightness: Unit = 0.0
    contrast: Unit = 0.0
    saturation: Unit = 0.0
    hue: float = Field(0.0, ge=0, le=0.5)
    rotate: float = Field(0.0, ge=0, le=180)
    scale: float = Field(0.0, ge=0, lt=1)  # the zoom factor 1 - scale must stay positive
    translate: Unit = 0.0
    crop: Pixels = 0
    crop_jitter: Pixels = 0


class TrainParams(Section):
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Optimizer = "adamw"
    schedule: Schedule = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)
    patience: int = Field(0, ge=0)
    seed: int = Field(0, ge=0)
    precision: Precision = "auto"
    nproc: int = Field(1, ge=1)
    aux_weight: float = Field(0.5, ge=0)
    ema: float = Field(0.0, ge=0, le=0.99999)
    val_raw: bool = False
    loss: LossParams = LossParams()
    augment: AugmentParams = AugmentParams()


class ExportParams(Section):
    registered_model: str = Field(
        "eyelip", pattern=r"^[^/:@']*[^/:@'\s][^/:@']*$"
    )  # a quote would break registry searches
    latency_repeats: int = Field(10, ge=1)


class TrackingParams(Section):
    experiment: str = Field("eyelip", min_length=1, pattern=r"\S")


class RuntimeParams(Section):
    n_jobs: int = Field(-1, ge=-1)
    backend: Backend = "loky"
    threads: int = Field(0, ge=0)
    device: Device = "auto"
    distributed: Literal["auto", False] = "auto"
    compile: bool = False

    @field_validator("n_jobs")
    @classmethod
    def _some_workers(cls, value: int) -> int:
        if value == 0:
            raise ParamError("runtime.n_jobs: 0 workers; use -1 for all cores or a positive count")
        return value


class Params(Section):
    """The whole of params.yaml. Rules that join two sections live here, so every stage checks them."""

    sample: SampleParams = SampleParams()
    data: DataParams = DataParams()
    resize: ResizeParams = ResizeParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    export: ExportParams = ExportParams()
    tracking: TrackingParams = TrackingParams()
    runtime: RuntimeParams = RuntimeParams()
    _written: dict[str, Any] = PrivateAttr(default_factory=dict)  # flattened, as read from the file

    @model_validator(mode="after")
    def _across_sections(self) -> Params:
        levels = 2**self.model.depth  # the U-Net halves its input this many times
        if self.resize.size * self.resize.train_scale % levels:
            raise ParamError(
                f"resize.size: {self.resize.size} px (x resize.train_scale {self.resize.train_scale}) "
                f"does not halve evenly through the U-Net's {self.model.depth} levels (model.depth); "
                f"use a multiple of {levels // math.gcd(levels, self.resize.train_scale)}"
            )
        if self.train.augment.crop % levels:
            raise ParamError(
                f"train.augment.crop: {self.train.augment.crop} px windows do not halve evenly through "
                f"the U-Net's {self.model.depth} levels (model.depth); use a multiple of {levels}, or 0"
            )
        if self.model.prior_gate and self.resize.prior == "none":
            raise ParamError(
                "model.prior_gate: needs prior channels after R, G, B; set resize.prior "
                "(e.g. facemesh) or model.prior_gate: 0"
            )
        if self.train.patience and self.split.val == 0:
            raise ParamError("train.patience: early stopping needs validation faces; set split.val > 0 or patience: 0")
        return self

    def flat(self) -> dict[str, Any]:
        """Every key as MLflow logs it (``train.lr``): the value as written (``rotate: 10`` stays 10, not the
        parsed 10.0, so runs compare with those logged before the schema), the default where left out."""
        return {**flatten(self.model_dump(exclude_none=True)), **self._written}


def load(path: str | os.PathLike[str] = PARAMS_FILE) -> Params:
    """params.yaml, validated whole; a ParamError names the first bad key (and the file)."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: not found; run from the project root, where params.yaml lives")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamError(f"{path}: not valid YAML: {exc}") from exc
    return parse(data, path)


def parse(data: Any, source: str | os.PathLike[str] = PARAMS_FILE) -> Params:
    """Validate an already-read params mapping; ``source`` names the file in errors about it."""
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
        params = Params.model_validate(data)
        params._written = flatten(data)
        return params
    except ValidationError as exc:  # the schema's types and ranges
        message = _message(exc, data)
    except ParamError as exc:  # its rules across keys, raised by the validators as they are
        message = str(exc)
    raise ParamError(f"{source}: {message}")


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


def _message(exc: ValidationError, data: Mapping[str, Any]) -> str:
    """The first error as one line; a union's alternatives are joined (``a number or a list``)."""
    errors = exc.errors(include_url=False)
    key, value = _located(errors[0], data)
    same = [e for e in errors if _located(e, data)[0] == key]
    kind = errors[0]["type"]
    if kind == "extra_forbidden":
        *parent, name = key.split(".")
        fields = _fields_at(parent)
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


def _fields_at(path: list[str]) -> list[str]:
    model: Any = Params
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


_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w-]*):[^#]*(?:#\s?(.*))?$")
_COMMENT_LINE = re.compile(r"^(\s*)#\s?(.*)$")


def comments(text: str) -> dict[str, str]:
    """Each dotted key's comment in a params file: the text after ``#`` on its line and the comment-only
    lines below it indented past the key (the continuation), joined by spaces."""
    found: dict[str, list[str]] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    current: tuple[int, str] | None = None
    for line in text.splitlines():
        key_line, comment_line = _KEY_LINE.match(line), _COMMENT_LINE.match(line)
        if key_line:
            indent = len(key_line[1])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, key_line[2]))
            dotted = ".".join(k for _, k in stack)
            found[dotted] = [key_line[3].strip()] if key_line[3] else []
            current = (indent, dotted)
        elif comment_line and current and len(comment_line[1]) > current[0]:
            found[current[1]].append(comment_line[2].strip())
        else:
            current = None
    return {key: " ".join(lines) for key, lines in found.items() if lines}


def json_schema(params_text: str) -> dict[str, Any]:
    """The JSON Schema of params.yaml and of the profiles (partial files: no key is required, the pipeline
    fills defaults), each key described by its comment in ``params_text``."""
    schema = Params.model_json_schema()
    described = comments(params_text)
    defs = schema.get("$defs", {})

    def visit(node: dict[str, Any], prefix: str) -> None:
        node.pop("required", None)
        for name, prop in node.get("properties", {}).items():
            key = f"{prefix}{name}"
            prop.pop("title", None)
            if key in described:
                prop["description"] = described[key]
            ref = prop.get("$ref") or next((a["$ref"] for a in prop.get("allOf", []) if "$ref" in a), None)
            if ref:
                visit(defs[ref.rsplit("/", 1)[1]], f"{key}.")

    visit(schema, "")
    for definition in defs.values():
        definition.pop("description", None)  # the class docstrings speak to programmers, not users
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = "eyelip's params.yaml (and profiles/*.yaml); generated by `eyelip params schema`"
    return schema


def schema_text(params_text: str) -> str:
    return json.dumps(json_schema(params_text), indent=2) + "\n"


def run_params(action: str, path: str | os.PathLike[str] = PARAMS_FILE) -> None:
    """``eyelip params check|schema``."""
    if action == "schema":
        print(schema_text(Path(path).read_text()), end="")
        return
    load(path)
    print(f"{path}: ok, {len(keys(yaml.safe_load(Path(path).read_text())))} keys")
