"""Resize images and fused masks to the training size, as memory-mappable arrays.

Output (written atomically): ``images.npy`` uint8 (N, S*k, S*k, 3 + P) (k = ``resize.input_scale``;
P prior channels after R, G, B, ``resize.prior``), ``masks.npy`` uint8 (N, C, S, S) with values 0/1
(the ground truth IoU is measured against), with ``resize.train_scale`` t > 1 also
``train_masks.npy`` (N, C, S*t, S*t) (the training targets, by the same rule at t times the size),
``ids.txt`` (array order), ``meta.json`` (the layout: targets and their parts, the fuse rule,
auxiliary targets, sizes, scales and prior, ``eyelip.data.spec.DataSpec``) and ``skipped.json``
(unreadable images, with reasons).
The rules (reduced-scale JPEG decode, area-average masks kept at >= 0.5) are ``eyelip.data.preprocess``'s.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eyelip import atomic
from eyelip.data.arrays import NpyRowWriter, ids_text
from eyelip.data.fuse import FusedMasks
from eyelip.data.layout import image_relpath
from eyelip.data.parallel import SKIP_REMEDY, map_samples
from eyelip.data.preprocess import decode_input, resize_mask
from eyelip.data.prior import require as require_prior
from eyelip.data.source import Source
from eyelip.data.spec import DataSpec
from eyelip.errors import ParamError


def resize_masks(native_masks: np.ndarray, size: int) -> np.ndarray:
    """(C, H, W) native masks area-resized by ``preprocess.resize_mask``: uint8 (C, size, size), 0/1."""
    return np.stack([resize_mask(m, size) for m in native_masks]).astype(np.uint8)


def resize_sample(
    source: Source,
    sample_id: int,
    native_masks: np.ndarray,
    size: int,
    input_size: int | None = None,
    prior: str = "none",
) -> tuple[np.ndarray, np.ndarray]:
    """One sample at the training size, by the pipeline's rules: the model input decoded from
    ``source`` (uint8 (I, I, 3 + prior channels), I = ``input_size``, default ``size``) and its
    (C, H, W) native masks area-resized (uint8 (C, S, S), 0/1)."""
    rel = image_relpath(sample_id)
    image = decode_input(source.read(rel), input_size or size, source.describe(rel), prior)
    return image, resize_masks(native_masks, size)


@dataclass
class ResizeSample:
    """Picklable per-sample job: (model input (I, I, 3 + P), masks (C, S, S), training masks
    (C, T, T), or None when T = S) as uint8."""

    source: Source
    fused_dir: Path
    size: int
    input_size: int
    prior: str
    train_size: int

    def __post_init__(self) -> None:
        self._fused: FusedMasks | None = None
        self._row: dict[int, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fused": None, "_row": {}}  # re-opened (memory-mapped) per worker

    def __call__(self, sample_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self._fused is None:
            self._fused = FusedMasks(self.fused_dir)
            self._row = {i: r for r, i in enumerate(self._fused.ids)}
        native = self._fused[self._row[sample_id]]
        image, masks = resize_sample(self.source, sample_id, native, self.size, self.input_size, self.prior)
        if self.train_size == self.size:
            return image, masks, None
        return image, masks, resize_masks(native, self.train_size)


def resize_dataset(
    source: Source,
    fused_dir: str | Path,
    out_dir: str | Path,
    size: int,
    input_scale: int = 1,
    on_error: str = "fail",
    n_jobs: int = -1,
    backend: str = "loky",
    prior: str = "none",
    train_scale: int = 1,
) -> dict[str, Any]:
    if input_scale % train_scale:
        raise ParamError(
            f"resize.train_scale: {train_scale} must divide resize.input_scale ({input_scale}): the "
            f"network predicts at the training size from photos at least that large"
        )
    require_prior(prior, "resize.prior")  # before any photo: without mediapipe, stop here, not in a worker
    fused = FusedMasks(fused_dir)
    spec = DataSpec(fused.targets, size, fused.rule, fused.aux_targets, input_scale, train_scale, prior)
    input_size, train_size, in_channels = spec.input_size, spec.train_size, spec.input_channels
    channels = fused.channels
    skipped: dict[int, str] = {}
    kept: list[int] = []
    no_face = 0  # photos whose prior channels are empty (each one also warned about by name)
    with atomic.atomic_path(out_dir, directory=True) as tmp:
        with contextlib.ExitStack() as files:
            images = files.enter_context(
                NpyRowWriter(tmp / "images.npy", (input_size, input_size, in_channels), np.uint8)
            )
            masks = files.enter_context(NpyRowWriter(tmp / "masks.npy", (channels, size, size), np.uint8))
            train_masks = (
                None
                if train_scale == 1
                else files.enter_context(
                    NpyRowWriter(tmp / "train_masks.npy", (channels, train_size, train_size), np.uint8)
                )
            )
            job = ResizeSample(source, Path(fused_dir), size, input_size, prior, train_size)
            for sample_id, (image, mask, fine) in map_samples(
                job,
                fused.ids,
                on_error=on_error,
                skipped=skipped,
                n_jobs=n_jobs,
                backend=backend,
                desc="resize",
                remedy=SKIP_REMEDY,
            ):
                images.append(image[None])
                no_face += in_channels > 3 and not image[..., 3:].any()
                masks.append(mask[None])
                if train_masks is not None:
                    train_masks.append(fine[None])
                kept.append(sample_id)
        (tmp / "ids.txt").write_text(ids_text(kept))
        spec.write(tmp)
        (tmp / "skipped.json").write_text(json.dumps({str(k): v for k, v in skipped.items()}, indent=2))
    summary = {
        "samples": len(kept),
        "skipped": len(skipped),
        "size": size,
        "input_size": input_size,
        "train_size": train_size,
        "prior": prior,
    }
    return summary if in_channels == 3 else {**summary, "no_face": no_face}
