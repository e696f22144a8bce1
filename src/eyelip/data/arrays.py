"""Compact, memory-mappable stage outputs.

Stages stream samples through memory: rows are appended to an ``.npy`` file whose length is only
known at the end (samples may be skipped), then the header is written. Readers ``np.load`` it with
``mmap_mode="r"`` so no stage needs the whole dataset in RAM.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Fixed header size (a multiple of 64, as numpy aligns data) so rows can be written before the
# final shape is known; 128 bytes fit any shape a dataset of this kind can have.
_HEADER_BYTES = 128
_MAGIC = b"\x93NUMPY\x01\x00"


class NpyRowWriter:
    """Append ``(k, *row_shape)`` blocks to an ``.npy`` file; ``close`` writes the header."""

    def __init__(self, path: str | os.PathLike[str], row_shape: tuple[int, ...], dtype: np.dtype | str) -> None:
        self.path = Path(path)
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._file = open(self.path, "wb")
        self._file.seek(_HEADER_BYTES)

    def append(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {block.shape[1:]}, expected {self.row_shape}")
        self._file.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.rows += block.shape[0]

    def close(self) -> None:
        header = repr(
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (self.rows, *self.row_shape),
            }
        )
        size = _HEADER_BYTES - len(_MAGIC) - 2
        text = header.ljust(size - 1).encode("latin1") + b"\n"
        if len(text) != size:
            raise ValueError(f"{self.path.name}: header too long for shape {(self.rows, *self.row_shape)}")
        self._file.seek(0)
        self._file.write(_MAGIC + size.to_bytes(2, "little") + text)
        self._file.close()

    def __enter__(self) -> NpyRowWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """Boolean (..., H, W) -> uint8 (..., H, ceil(W/8)): 8x smaller for full-resolution masks."""
    return np.packbits(masks, axis=-1)


def unpack_masks(packed: np.ndarray, width: int) -> np.ndarray:
    return np.unpackbits(packed, axis=-1, count=width).astype(bool)


def read_ids(path: str | os.PathLike[str]) -> list[int]:
    return [int(line) for line in Path(path).read_text().split()]


def ids_text(ids: list[int]) -> str:
    return "".join(f"{i}\n" for i in ids)
