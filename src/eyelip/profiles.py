"""``eyelip profile NAME --data-root PATH``: merge a partial params file into ``params.yaml``.

A profile (``profiles/NAME.yaml``) sets only the keys its setup needs. Merging edits
``params.yaml`` in place with a round-trip YAML parser, so comments and key order survive and
``git diff params.yaml`` shows exactly what changed; a plain ``dvc repro`` then runs with it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from eyelip import atomic
from eyelip.data.source import Source
from eyelip.errors import EyelipError
from eyelip.params.core import PARAMS_FILE
from eyelip.params.whole import parse

PROFILES_DIR = "profiles"
# Mappings whose keys are names chosen by the user, not settings: a profile replaces them whole
# (merging {eyes, lips} into {eyes_lips} would train three targets).
REPLACED = {("data", "targets"), ("data", "aux_targets")}


def available(profiles_dir: str | Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps comments, key order and flow style
    yaml.width = 4096  # never re-wrap long lines
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _merge(target: Any, patch: Mapping[str, Any], path: tuple[str, ...], changed: list[str]) -> None:
    for key, value in patch.items():
        here = (*path, str(key))
        old = target.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping) and here not in REPLACED:
            _merge(old, value, here, changed)
        elif old != value:
            target[key] = value
            changed.append(f"{'.'.join(here)}: {_show(old)} -> {_show(value)}")


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return "(unset)" if value is None else str(value)


def _root_param(data_root: Path, project: Path) -> str:
    """Relative inside the project (portable), absolute outside it: `dvc exp run --queue/--temp`
    runs in a copy under .dvc/tmp, where a path such as ../shared/... would point elsewhere."""
    resolved = data_root.resolve()
    try:
        return resolved.relative_to(project.resolve()).as_posix()
    except ValueError:
        return str(resolved)


def apply_profile(
    name: str,
    data_root: str | os.PathLike[str],
    params_path: str | Path = PARAMS_FILE,
    profiles_dir: str | Path = PROFILES_DIR,
) -> list[str]:
    """Merge ``profiles/<name>.yaml`` and ``data.root`` into ``params_path``; returns the changes
    as ``key: old -> new`` lines (empty if params.yaml already had them)."""
    profile_file = Path(profiles_dir) / f"{name}.yaml"
    if not profile_file.is_file():
        names = available(profiles_dir)
        raise EyelipError(f"unknown profile {name!r}; available: {', '.join(names) or f'none in {profiles_dir}/'}")
    params_path = Path(params_path)
    if not params_path.is_file():
        raise EyelipError(f"{params_path}: not found; run from the project root, where params.yaml lives")
    Source(data_root)  # a clear DataError if it is missing or not CelebAMask-HQ-shaped
    yaml = _yaml()
    patch = yaml.load(profile_file.read_text()) or {}
    if not isinstance(patch, Mapping):
        raise EyelipError(f"{profile_file}: expected a mapping of sections (data:, train:, ...)")
    params = yaml.load(params_path.read_text())
    changed: list[str] = []
    root = _root_param(Path(data_root), params_path.parent)
    rest = {k: v for k, v in patch.items() if k != "data"}
    _merge(params, {"data": {**patch.get("data", {}), "root": root}, **rest}, (), changed)
    parse(params, f"{profile_file} merged into {params_path}")  # the stages' schema; nothing is written unless valid
    if changed:
        text = io.StringIO()
        yaml.dump(params, text)
        atomic.write_text(params_path, text.getvalue())
    return changed


def run_profile(name: str, data_root: str) -> None:
    """``eyelip profile``: merge profiles/NAME.yaml and ``data_root`` into params.yaml, listing the changes."""
    changed = apply_profile(name, data_root)
    print(f"params.yaml: profile {name!r}, " + (f"{len(changed)} changes:" if changed else "already applied"))
    for line in changed:
        print(f"  {line}")
    if changed:
        print("review with `git diff params.yaml`, then run `dvc repro`")
