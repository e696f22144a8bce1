"""The whole of ``params.yaml``: :class:`Params`, with the rules that join sections, and its JSON Schema.

Used where the whole file is checked: the first stage, ``check-data`` (which depends on all of
params.yaml, so any edit re-runs it and a bad key anywhere stops `dvc repro` there), ``eyelip params
check|schema`` and ``eyelip profile``. Editors get completion, hover docs and red squiggles from
``params.schema.json``, which :func:`json_schema` generates from these models with each key's description
taken from its comment in ``params.yaml`` (the one source of both); tests/test_params.py keeps the
committed file in sync.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import model_validator

from eyelip.errors import ParamError
from eyelip.params import core
from eyelip.params.core import PARAMS_FILE, File, keys
from eyelip.params.data import DataParams
from eyelip.params.export import ExportParams
from eyelip.params.model import ModelParams
from eyelip.params.resize import ResizeParams
from eyelip.params.runtime import RuntimeParams
from eyelip.params.sample import SampleParams
from eyelip.params.split import SplitParams
from eyelip.params.tracking import TrackingParams
from eyelip.params.train import TrainParams


class Params(File):
    """The whole of params.yaml (unknown sections are errors). Rules that join two sections live here: the
    first stage, ``check-data``, checks them before any other works."""

    sample: SampleParams = SampleParams()
    data: DataParams = DataParams()
    resize: ResizeParams = ResizeParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    export: ExportParams = ExportParams()
    tracking: TrackingParams = TrackingParams()
    runtime: RuntimeParams = RuntimeParams()

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


def load(path: str | os.PathLike[str] = PARAMS_FILE) -> Params:
    """params.yaml, validated whole; a ParamError names the first bad key (and the file)."""
    return core.load(Params, path)


def parse(data: Any, source: str | os.PathLike[str] = PARAMS_FILE) -> Params:
    """Validate an already-read params mapping whole; ``source`` names the file in errors about it."""
    return core.validate(Params, data, source)


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
