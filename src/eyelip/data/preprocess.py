"""Decoding and resizing rules, shared by the pipeline stages, evaluation and ``eyelip predict``.

One rule each, used everywhere, because IoU at a reduced size depends on how the ground truth was
resized: NEAREST and area-average masks of the same faces differ along every thin outline
(docs/pipeline.md, "The resizing rule"):

- every image and mask is read as viewers show it: its EXIF orientation applied first (a phone stores
  a portrait photo sideways with a tag that says how to turn it), so masks line up with the photo
  as displayed; then RGB from any pixel mode (:func:`to_rgb`).
- images: JPEG decoded at reduced scale where the format allows (``Image.draft``: a 1024 px JPEG
  decodes at 1/8 scale straight to 128 px, far cheaper than a full decode), then bilinear
  (antialiased) resize to ``size`` x ``size``.
- masks: area-average (box filter) to ``size``, then foreground where coverage >= 0.5.
- model inputs: the image, then the channels of ``resize.prior`` (``eyelip.data.prior``), computed on the
  photo at full resolution.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from eyelip.data import prior as priors
from eyelip.errors import DataError

# Messages say what is wrong with which file (``where``), never what to do: that depends on who reads
# them (a pipeline stage, `eyelip predict`, an API client), and each front end adds its own remedy.

# 16-bit greyscale modes (a 16-bit PNG opens as one of these): 0-65535, which a plain convert clips to white
_WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _open(data: bytes, where: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:  # its message holds the repr of the buffer, not the reason
        raise DataError(
            f"{where}: not a readable image (Pillow recognises no image format in it: not an image, "
            f"or corrupt from its first bytes)"
        ) from exc
    except Exception as exc:  # PIL raises several types for undecodable input
        raise DataError(f"{where}: not a readable image ({exc})") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB of any pixel mode: grey, palette, CMYK by PIL's conversions; 16-bit grey scaled to 8 bits;
    alpha dropped, keeping the colour stored under it (a transparent background is not painted black)."""
    if image.mode in _WIDE_GREY:
        grey = np.asarray(image, dtype=np.int64)
        image = Image.fromarray(((grey.clip(0, 65535) * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_image(data: bytes, size: int | None, where: str) -> np.ndarray:
    """RGB uint8 array (size, size, 3) from encoded image bytes (any format, size and pixel mode),
    turned upright by its EXIF orientation; at the upright image's own size when ``size`` is None."""
    image = _open(data, where)
    try:
        if size is not None:
            image.draft("RGB", (size, size))  # no-op for formats other than JPEG; square, so before turning
        ImageOps.exif_transpose(image, in_place=True)  # no-op without an orientation tag
        image = to_rgb(image)
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data surfaces here
        raise DataError(f"{where}: corrupt or truncated image ({exc})") from exc


def decode_input(data: bytes, size: int, where: str, prior: str = "none") -> np.ndarray:
    """Model input uint8 (size, size, 3 + prior channels): the image by :func:`decode_image`, then the
    prior's channels, computed on a full-resolution decode of the same bytes (all zero, with a
    ``prior.NoFaceWarning`` naming ``where``, when the mesh finds no face)."""
    image = decode_image(data, size, where)
    if priors.channels(prior) == 0:  # also refuses an unknown prior
        return image
    return np.concatenate([image, priors.compute(prior, decode_image(data, None, where), size, where)], axis=2)


def decode_mask(data: bytes, where: str) -> np.ndarray:
    """Boolean (H, W) foreground of a part PNG: any non-zero value, whether it decodes as L or RGB."""
    image = _open(data, where)
    try:
        ImageOps.exif_transpose(image, in_place=True)  # as its photo: masks are drawn on the upright face
        if image.mode not in ("1", "L", "RGB"):
            image = image.convert("L")  # palette indices are not intensities
        array = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{where}: corrupt or truncated mask ({exc})") from exc
    return array.any(axis=2) if array.ndim == 3 else array > 0


def mask_coverage(mask: np.ndarray, size: int) -> np.ndarray:
    """uint8 (size, size): the share of each output pixel's footprint that ``mask`` covers, 0-255
    (box filter; 255 = fully covered)."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((size, size), Image.Resampling.BOX))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Boolean (size, size) mask: box-filter coverage of each output pixel, kept where >= 0.5."""
    if mask.shape == (size, size):
        return mask.astype(bool, copy=False)
    # 127.5 rounds to 128, so exactly half counts.
    return mask_coverage(mask, size) >= 128


def to_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, K) -> float32 (N, K, S, S) in [0, 1]; the model input rule, for every model format."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
