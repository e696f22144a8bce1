"""Fuse CelebAMask-HQ part masks into one channel per target.

A target is a named group of parts (default ``eyes_lips: [l_eye, r_eye, u_lip, l_lip]``). Two rules:

- ``union`` (default, the reference notebook's): a pixel is in the target if any of its part files marks it.
- ``label_map``: the official label maps paint parts in ``PARTS`` order and later parts win, so
  hair, a hat or eyeglasses' later-painted parts cover eyes and lips; a pixel is in the target only
  if the last part painted there is one of the target's. Use it to match label-map ground truth.

A missing part file means the part is not visible: an empty part, not an error.

Auxiliary targets (``data.aux_targets``, e.g. ``skin``, ``brows``, ``mouth``) are fused the same
way into extra channels after the targets. Training learns them as well, so a few hundred faces
teach the network the whole face around the eyes and lips; they are never scored, and the saved
model drops their outputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eyelip import atomic
from eyelip.data.arrays import NpyRowWriter, ids_text, pack_masks, read_ids, unpack_masks
from eyelip.data.layout import PARTS, mask_relpath
from eyelip.data.parallel import SKIP_REMEDY, map_samples
from eyelip.data.preprocess import decode_mask
from eyelip.data.source import Source
from eyelip.errors import DataError, ParamError

RULES = ("union", "label_map")


def check_targets(targets: Any, key: str = "data.targets", allow_empty: bool = False) -> dict[str, list[str]]:
    """Validate ``data.targets`` (or ``key``): a mapping of target name -> non-empty list of known parts."""
    if allow_empty and targets in (None, {}):
        return {}
    if not isinstance(targets, Mapping) or not targets:
        raise ParamError(
            f"{key}: expected a mapping such as {{eyes_lips: [l_eye, r_eye, u_lip, l_lip]}}, got {targets!r}"
        )
    checked: dict[str, list[str]] = {}
    for name, parts in targets.items():
        if not isinstance(parts, list) or not parts:
            raise ParamError(f"{key}.{name}: expected a non-empty list of parts, got {parts!r}")
        for part in parts:
            if part not in PARTS:
                raise ParamError(f"{key}.{name}: unknown part {part!r}; parts are {', '.join(PARTS)}")
        checked[str(name)] = list(parts)
    return checked


def check_aux_targets(aux_targets: Any, targets: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Validate ``data.aux_targets`` ({} or None: none); names must differ from the targets'."""
    aux = check_targets(aux_targets, "data.aux_targets", allow_empty=True)
    clash = sorted(set(aux) & set(targets))
    if clash:
        raise ParamError(f"data.aux_targets: {clash} are already data.targets; give auxiliary targets other names")
    return aux


def fuse(
    parts: Mapping[str, np.ndarray], targets: Mapping[str, list[str]], rule: str, shape: tuple[int, int]
) -> np.ndarray:
    """Boolean (C, H, W) target masks from the visible parts' boolean masks."""
    out = np.zeros((len(targets), *shape), dtype=bool)
    if rule == "union":
        for c, names in enumerate(targets.values()):
            for name in names:
                if name in parts:
                    out[c] |= parts[name]
        return out
    # label_map: paint in official order, later parts overwrite earlier ones.
    label = np.full(shape, -1, dtype=np.int8)
    for index, name in enumerate(PARTS):
        if name in parts:
            label[parts[name]] = index
    for c, names in enumerate(targets.values()):
        out[c] = np.isin(label, [PARTS.index(n) for n in names])
    return out


def load_parts(source: Source, sample_id: int, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Decode the visible parts among ``names``; all part masks of a sample must share one size."""
    parts: dict[str, np.ndarray] = {}
    for name in names:
        rel = mask_relpath(sample_id, name)
        if source.exists(rel):
            parts[name] = decode_mask(source.read(rel), source.describe(rel))
    shapes = {m.shape for m in parts.values()}
    if len(shapes) > 1:
        raise DataError(
            f"{source.describe(mask_relpath(sample_id, '*'))}: part masks of different sizes "
            f"{sorted(shapes)}; every part of a sample must have the same size"
        )
    return parts


@dataclass(frozen=True)
class FuseSample:
    """Picklable per-sample job: returns (mask shape, bit-packed (C, H, W/8) target masks)."""

    source: Source
    targets: dict[str, list[str]]
    rule: str

    def __call__(self, sample_id: int) -> tuple[tuple[int, int], np.ndarray]:
        self.source.check_sample(sample_id)
        wanted = PARTS if self.rule == "label_map" else tuple(p for ps in self.targets.values() for p in ps)
        parts = load_parts(self.source, sample_id, wanted)
        if not parts:  # no target part visible: take the size from any other part of the sample
            others = [p for p in PARTS if p not in wanted and self.source.exists(mask_relpath(sample_id, p))]
            if not others:
                raise DataError(
                    f"{self.source.describe(self.source.mask_folder(sample_id))}/: no part masks for "
                    f"sample {sample_id} ({sample_id:05d}_*.png)"
                )
            ref = load_parts(self.source, sample_id, (others[0],))[others[0]]
            shape = ref.shape
        else:
            shape = next(iter(parts.values())).shape
        return shape, pack_masks(fuse(parts, self.targets, self.rule, shape))


def fuse_dataset(
    source: Source,
    out_dir: str | Path,
    targets: Mapping[str, list[str]],
    rule: str = "union",
    on_error: str = "fail",
    n_jobs: int = -1,
    backend: str = "loky",
    aux_targets: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/{masks.npy, ids.txt, skipped.json, meta.json}`` atomically; return a summary for metrics.

    ``masks.npy`` is uint8 (N, C, H, ceil(W/8)) bit-packed at the source mask resolution (512 px in
    CelebAMask-HQ), so evaluation can score predictions at the native size. Its channels are the
    targets, then the auxiliary targets.
    """
    targets = check_targets(targets)
    aux_targets = check_aux_targets(aux_targets, targets)
    channels = {**targets, **aux_targets}
    ids = source.ids()
    skipped: dict[int, str] = {}
    kept: list[int] = []
    coverage = np.zeros(len(channels))
    with atomic.atomic_path(out_dir, directory=True) as tmp:
        writer: NpyRowWriter | None = None
        mask_shape: tuple[int, int] | None = None
        job = FuseSample(source, channels, rule)
        for sample_id, (shape, packed) in map_samples(
            job,
            ids,
            on_error=on_error,
            skipped=skipped,
            n_jobs=n_jobs,
            backend=backend,
            desc="fuse-masks",
            remedy=SKIP_REMEDY,
        ):
            if mask_shape is None:
                mask_shape = shape
                writer = NpyRowWriter(tmp / "masks.npy", packed.shape, np.uint8)
            elif shape != mask_shape:
                error = (
                    f"{source.describe(mask_relpath(sample_id, '*'))}: masks are {shape[1]}x{shape[0]}, "
                    f"but the dataset's are {mask_shape[1]}x{mask_shape[0]}"
                )
                if on_error == "fail":
                    raise DataError(f"{error}; resize them, or set data.on_error: skip to leave the sample out")
                skipped[sample_id] = error
                continue
            writer.append(packed[None])
            kept.append(sample_id)
            coverage += unpack_masks(packed, shape[1]).mean(axis=(1, 2))
        if writer is None:
            raise DataError(f"data.root: no usable sample in {source.root} ({len(skipped)} skipped)")
        writer.close()
        (tmp / "ids.txt").write_text(ids_text(kept))
        (tmp / "skipped.json").write_text(json.dumps({str(k): v for k, v in skipped.items()}, indent=2))
        (tmp / "meta.json").write_text(
            json.dumps({"targets": targets, "aux_targets": aux_targets, "rule": rule, "mask_size": list(mask_shape)})
        )
    return {
        "samples": len(kept),
        "skipped": len(skipped),
        "mask_height": mask_shape[0],
        "mask_width": mask_shape[1],
        "coverage": {name: round(float(c / len(kept)), 5) for name, c in zip(channels, coverage)},
    }


class FusedMasks:
    """Reader for ``fuse_dataset``'s output: row ``i`` is sample ``ids[i]``'s (C, H, W) boolean masks,
    the targets' channels first, then the auxiliary targets'."""

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        self.targets: dict[str, list[str]] = meta["targets"]
        self.aux_targets: dict[str, list[str]] = meta.get("aux_targets", {})
        self.rule: str = meta["rule"]
        self.height, self.width = meta["mask_size"]
        self.ids = read_ids(directory / "ids.txt")
        self._packed = np.load(directory / "masks.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def channels(self) -> int:
        """Mask channels per sample: the targets', then the auxiliary targets'."""
        return len(self.targets) + len(self.aux_targets)

    def __getitem__(self, row: int) -> np.ndarray:
        return unpack_masks(self._packed[row], self.width)
