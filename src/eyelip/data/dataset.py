"""Training batches from the memory-mapped arrays of the ``resize`` stage.

Only the rows of a batch are read from disk, so a 256 px full dataset (~6 GB) never has to fit in
RAM. Model input is RGB and any prior channels (``resize.prior``) scaled to [0, 1], (N, 3 + P, S*k, S*k)
float32 (k = ``resize.input_scale``); targets are (N, C, S, S) float32. Training targets are
(N, C, S*t, S*t) with ``resize.train_scale`` t > 1 (``train_masks.npy``), else the same masks. The
arrays' layout (targets, sizes, prior) is their ``meta.json`` (``eyelip.data.spec.DataSpec``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from eyelip.data.arrays import read_ids
from eyelip.data.preprocess import to_nchw
from eyelip.data.spec import META, DataSpec
from eyelip.errors import DataError


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, K) -> float (N, K, S, S) in [0, 1], by the predictors' own rule."""
    return torch.from_numpy(to_nchw(images))


class ResizedArrays:
    """``images.npy`` / ``masks.npy`` / ``ids.txt`` of a resized dataset, memory-mapped, and its layout
    (``spec``, from ``meta.json``), checked against the arrays' shapes."""

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.images = np.load(directory / "images.npy", mmap_mode="r")
        self.masks = np.load(directory / "masks.npy", mmap_mode="r")
        fine = directory / "train_masks.npy"  # written only with resize.train_scale > 1
        self.train_masks = np.load(fine, mmap_mode="r") if fine.exists() else self.masks
        self.ids = read_ids(directory / "ids.txt")
        self._row = {sample_id: row for row, sample_id in enumerate(self.ids)}
        self.spec = DataSpec.read(directory)
        spec, meta = self.spec, directory / META
        channels = len(spec.channels)
        shapes = {
            "images.npy": (self.images, (spec.input_size, spec.input_size, spec.input_channels)),
            "masks.npy": (self.masks, (channels, spec.size, spec.size)),
            "train_masks.npy": (self.train_masks, (channels, spec.train_size, spec.train_size)),
        }
        for name, (array, expected) in shapes.items():
            if array.shape[1:] != expected:
                raise DataError(
                    f"{directory / name}: rows of shape {array.shape[1:]}, but {meta} makes them "
                    f"{expected} (channels {spec.channels}, prior {spec.prior!r}); "
                    f"re-run `dvc repro resize`"
                )

    def rows(self, ids: Sequence[int], name: str = "split") -> np.ndarray:
        missing = [i for i in ids if i not in self._row]
        if missing:
            raise DataError(f"{name}: ids {missing[:5]} are not in the resized data; re-run `dvc repro`")
        return np.array([self._row[i] for i in ids], dtype=np.int64)

    def batch(self, rows: np.ndarray, train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and masks of ``rows``; with ``train``, the training targets (``train_masks``)."""
        order = np.sort(rows)  # sorted reads are sequential on disk; order within a batch is irrelevant
        masks = self.train_masks if train else self.masks
        return to_input(self.images[order]), torch.from_numpy(masks[order].astype(np.float32))

    def batches(
        self, rows: np.ndarray, batch_size: int, generator: torch.Generator | None = None, train: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches over ``rows``; shuffled with ``generator`` when given, else in order; ``train`` as in
        :meth:`batch`."""
        if generator is not None:
            rows = rows[torch.randperm(len(rows), generator=generator).numpy()]
        for start in range(0, len(rows), batch_size):
            yield self.batch(rows[start : start + batch_size], train)


def split_rows(arrays: ResizedArrays, split_dir: str | Path, name: str) -> np.ndarray:
    """The rows of ``arrays`` that split ``name`` (``data/split/<name>.txt``) lists."""
    return arrays.rows(read_ids(Path(split_dir) / f"{name}.txt"), f"data/split/{name}.txt")
