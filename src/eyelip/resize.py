"""Resize images and fused masks to the training size, as memory-mappable arrays.

Output (written atomically): ``images.npy`` uint8 (N, S*k, S*k, 3 + P) (k = ``resize.input_scale``;
P prior channels after R, G, B, ``resize.prior``), ``masks.npy`` uint8 (N, C, S, S) with values 0/1,
``ids.txt`` (array order), ``meta.json`` (the prior) and ``skipped.json`` (unreadable images, with
reasons).
The rules (reduced-scale JPEG decode, area-average masks kept at >= 0.5) are ``eyelip.preprocess``'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eyelip import atomic
from eyelip.arrays import NpyRowWriter, ids_text
from eyelip.fuse import FusedMasks
from eyelip.layout import image_relpath
from eyelip.parallel import map_samples
from eyelip.preprocess import decode_input, resize_mask
from eyelip.prior import channels as prior_channels
from eyelip.source import Source


def resize_sample(source: Source, sample_id: int, native_masks: np.ndarray, size: int,
                  input_size: int | None = None, prior: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """One sample at the training size, by the pipeline's rules: the model input decoded from
    ``source`` (uint8 (I, I, 3 + prior channels), I = ``input_size``, default ``size``) and its
    (C, H, W) native masks area-resized (uint8 (C, S, S), 0/1)."""
    rel = image_relpath(sample_id)
    image = decode_input(source.read(rel), input_size or size, source.describe(rel), prior)
    return image, np.stack([resize_mask(m, size) for m in native_masks]).astype(np.uint8)


@dataclass
class ResizeSample:
    """Picklable per-sample job: (model input (I, I, 3 + P), masks (C, S, S)) as uint8."""

    source: Source
    fused_dir: Path
    size: int
    input_size: int
    prior: str

    def __post_init__(self) -> None:
        self._fused: FusedMasks | None = None
        self._row: dict[int, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fused": None, "_row": {}}  # re-opened (memory-mapped) per worker

    def __call__(self, sample_id: int) -> tuple[np.ndarray, np.ndarray]:
        if self._fused is None:
            self._fused = FusedMasks(self.fused_dir)
            self._row = {i: r for r, i in enumerate(self._fused.ids)}
        return resize_sample(self.source, sample_id, self._fused[self._row[sample_id]], self.size,
                             self.input_size, self.prior)


def resize_dataset(source: Source, fused_dir: str | Path, out_dir: str | Path, size: int, input_scale: int = 1,
                   on_error: str = "fail", n_jobs: int = -1, backend: str = "loky",
                   prior: str = "none") -> dict[str, Any]:
    input_size = size * input_scale
    in_channels = 3 + prior_channels(prior)
    fused = FusedMasks(fused_dir)
    channels = fused.channels
    skipped: dict[int, str] = {}
    kept: list[int] = []
    with atomic.atomic_path(out_dir, directory=True) as tmp:
        with NpyRowWriter(tmp / "images.npy", (input_size, input_size, in_channels), np.uint8) as images, \
                NpyRowWriter(tmp / "masks.npy", (channels, size, size), np.uint8) as masks:
            job = ResizeSample(source, Path(fused_dir), size, input_size, prior)
            for sample_id, (image, mask) in map_samples(job, fused.ids, on_error=on_error, skipped=skipped,
                                                        n_jobs=n_jobs, backend=backend, desc="resize"):
                images.append(image[None])
                masks.append(mask[None])
                kept.append(sample_id)
        (tmp / "ids.txt").write_text(ids_text(kept))
        (tmp / "meta.json").write_text(json.dumps({"prior": prior}))
        (tmp / "skipped.json").write_text(json.dumps({str(k): v for k, v in skipped.items()}, indent=2))
    return {"samples": len(kept), "skipped": len(skipped), "size": size, "input_size": input_size,
            "prior": prior}
