"""Batched data augmentation on tensors, run on the training device.

Random parameters are drawn per sample from an explicit ``torch.Generator``, so a run is
reproducible from its seed, independently of data-loader workers. Geometric transforms are
applied identically to images and masks; colour transforms touch R, G, B only (channels after them,
the ``resize.prior`` maps, are flipped and warped with the pixels).

Strengths (the ``train.augment`` params dict; a missing key or 0 disables that transform):

* ``hflip``: probability of a horizontal flip. Target channels listed in ``flip_pairs``
  swap places (e.g. ``l_eye`` / ``r_eye`` if they were separate channels; with the default
  fused ``eyes_lips`` or ``eyes`` / ``lips`` layouts there is nothing to swap).
* ``brightness``, ``contrast``, ``saturation``: factor drawn from ``U(1 - s, 1 + s)``.
* ``hue``: rotation of the chroma plane (YIQ space) by ``U(-h, h)`` of a full turn; a cheap
  linear stand-in for an HSV hue shift, ``h`` <= 0.5.
* ``rotate``: rotation in degrees drawn from ``U(-r, r)``.
* ``scale``: zoom factor drawn from ``U(1 - s, 1 + s)``.
* ``translate``: shift of ``U(-t, t)`` of the image size along each axis.
* ``crop``: train on a ``crop`` x ``crop`` window (pixels of the training masks, ``resize.size`` x
  ``resize.train_scale``; 0 = the whole face) centred on the bounding box of the face's mask channels,
  after the warp, and moved by ``U(-j, j)`` pixels along each axis (``crop_jitter``: j). The U-Net is
  fully convolutional, so it is still validated and run on whole faces; the crop only spends the
  training compute where the targets are (a 64 px window holds the eyes and lips of a 128 px face,
  a 128 px window those of a 256 px face: twice the width, or twice the resolution, in the same time).

Rotation, scale and translation form one affine warp (``affine_grid`` + ``grid_sample``).
Areas moved in from outside the frame are zero (black image, background mask). Masks are
warped bilinearly and re-binarised at 0.5, which keeps their boundaries in place better than
nearest-neighbour sampling. It is not the ground truth's rule (box coverage of the 512 px mask
kept >= 0.5), and the two differ along thin outlines. Warping coverage maps follows the rule, but
trained no better model on real faces and costs more time per step (docs/experiments.md), so it is
not done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from eyelip.params.train import AugmentParams

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, also the Y row of YIQ
_RGB_TO_YIQ = torch.tensor([_LUMA, (0.596, -0.274, -0.322), (0.211, -0.523, 0.312)])

Uniform = Callable[[float, float], torch.Tensor]  # (low, high) -> (N,) per-sample draws


class Augment:
    """Random flip, colour jitter and affine warp of a batch.

    Args:
        cfg: the ``train.augment`` params section (see the module docstring), checked by
            :mod:`eyelip.params.train`.
        flip_pairs: pairs ``(i, j)`` of mask channels that swap under a horizontal flip.
    """

    def __init__(self, cfg: AugmentParams, flip_pairs: Sequence[tuple[int, int]] = ()) -> None:
        self.cfg = {key: float(value) for key, value in cfg}
        channels = [c for pair in flip_pairs for c in pair]
        if len(set(channels)) != len(channels) or any(len(pair) != 2 for pair in flip_pairs):
            raise ValueError(f"flip_pairs must be disjoint (i, j) pairs, got {flip_pairs!r}")
        self.flip_pairs = [tuple(pair) for pair in flip_pairs]

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch.

        Args:
            images: float (N, 3 + P, H, W) in [0, 1]: R, G, B, then P prior channels.
            masks: float (N, C, H/k, W/k) with values 0/1; k >= 1 (``resize.input_scale``), and the
                same warp is applied at both sizes.
            generator: source of randomness; it may live on the CPU even for CUDA batches
                (the few per-sample numbers are copied over), which also makes a seed give the
                same augmentations on every device.

        Returns:
            New ``(images, masks)`` tensors, of the same shapes unless ``crop`` is set; the inputs
            are not modified.
        """
        if images.ndim != 4 or images.shape[1] < 3:
            raise ValueError(f"images must be (N, 3 + P, H, W), got {tuple(images.shape)}")
        n = images.shape[0]
        if (
            masks.ndim != 4
            or masks.shape[0] != n
            or images.shape[2] * masks.shape[3] != images.shape[3] * masks.shape[2]
            or images.shape[2] % masks.shape[2]
        ):
            raise ValueError(
                f"masks must be (N, C, H/k, W/k) for images {tuple(images.shape)} (integer k >= 1), "
                f"got {tuple(masks.shape)}"
            )

        def uniform(low: float, high: float) -> torch.Tensor:
            values = torch.rand(n, generator=generator, device=generator.device)
            return (low + (high - low) * values).to(images.device, images.dtype)

        cfg = self.cfg
        if cfg["hflip"]:
            flip = (uniform(0, 1) < cfg["hflip"]).view(n, 1, 1, 1)
            images = torch.where(flip, images.flip(-1), images)
            masks = torch.where(flip, self._swap_pairs(masks.flip(-1)), masks)
        if cfg["brightness"] or cfg["contrast"] or cfg["saturation"] or cfg["hue"]:
            images = torch.cat([self._colour(images[:, :3], uniform), images[:, 3:]], 1)
        if cfg["rotate"] or cfg["scale"] or cfg["translate"]:
            images, masks = self._warp(images, masks, uniform)
        if cfg["crop"]:
            images, masks = self._crop(images, masks, uniform)
        return images, masks

    def _colour(self, rgb: torch.Tensor, uniform: Uniform) -> torch.Tensor:
        cfg = self.cfg
        if cfg["brightness"]:
            rgb = rgb * _factor(uniform, cfg["brightness"])
        if cfg["contrast"]:
            mean = _gray(rgb).mean((2, 3), keepdim=True)
            rgb = mean + (rgb - mean) * _factor(uniform, cfg["contrast"])
        if cfg["saturation"]:
            gray = _gray(rgb)
            rgb = gray + (rgb - gray) * _factor(uniform, cfg["saturation"])
        if cfg["hue"]:
            rgb = _rotate_hue(rgb, uniform(-cfg["hue"], cfg["hue"]) * 2 * math.pi)
        return rgb.clamp(0, 1)

    def _swap_pairs(self, masks: torch.Tensor) -> torch.Tensor:
        order = list(range(masks.shape[1]))
        for i, j in self.flip_pairs:
            if max(i, j) >= len(order):
                raise ValueError(f"flip pair {(i, j)} out of range for {len(order)} mask channels")
            order[i], order[j] = order[j], order[i]
        return masks[:, order]

    def _warp(self, images: torch.Tensor, masks: torch.Tensor, uniform: Uniform) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        n, _, height, width = images.shape
        angle = uniform(-cfg["rotate"], cfg["rotate"]) * (math.pi / 180)
        scale = uniform(1 - cfg["scale"], 1 + cfg["scale"])
        # affine_grid maps output to input coordinates, so the inverse zoom (1 / scale) makes
        # the content scale times larger. Normalised coordinates run over [-1, 1], hence 2 *
        # translate; the H/W ratios keep rotation rigid on non-square images.
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        shift_x = uniform(-1, 1) * 2 * cfg["translate"]
        shift_y = uniform(-1, 1) * 2 * cfg["translate"]
        theta = torch.stack(
            [
                torch.stack([cos, -sin * height / width, shift_x], -1),
                torch.stack([sin * width / height, cos, shift_y], -1),
            ],
            dim=1,
        )
        # Normalised coordinates make one theta the same warp at the image and the mask size.
        grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
        images = F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
        if masks.shape[2:] != images.shape[2:]:
            grid = F.affine_grid(theta, [n, 1, *masks.shape[2:]], align_corners=False)
        masks = F.grid_sample(masks, grid.to(masks.dtype), padding_mode="zeros", align_corners=False)
        return images, (masks > 0.5).to(masks.dtype)

    def _crop(self, images: torch.Tensor, masks: torch.Tensor, uniform: Uniform) -> tuple[torch.Tensor, torch.Tensor]:
        size, jitter = int(self.cfg["crop"]), self.cfg["crop_jitter"]
        height, width = masks.shape[2:]
        if size > min(height, width):
            raise ValueError(
                f"train.augment.crop: a {size} px window does not fit {height}x{width} masks; "
                f"use at most {min(height, width)}, or 0 to train on whole faces"
            )
        scale = images.shape[2] // height  # resize.input_scale: photo pixels per mask pixel
        on = masks.amax(1) > 0
        tops = _window(on.any(2), size, uniform(-jitter, jitter)).tolist()
        lefts = _window(on.any(1), size, uniform(-jitter, jitter)).tolist()
        windows = list(zip(tops, lefts))
        images = torch.stack(
            [
                images[i, :, scale * top : scale * (top + size), scale * left : scale * (left + size)]
                for i, (top, left) in enumerate(windows)
            ]
        )
        masks = torch.stack(
            [masks[i, :, top : top + size, left : left + size] for i, (top, left) in enumerate(windows)]
        )
        return images, masks


def _window(on: torch.Tensor, size: int, shift: torch.Tensor) -> torch.Tensor:
    """First index of a ``size``-long window per row of ``on`` (N, L): centred on the row's True
    span (on the middle if it has none), moved by ``shift`` (N,) and kept inside ``[0, L)``."""
    length = on.shape[1]
    index = torch.arange(length, device=on.device, dtype=shift.dtype)
    first = torch.where(on, index, float(length)).amin(1)
    last = torch.where(on, index, -1.0).amax(1)
    centre = torch.where(on.any(1), (first + last) / 2, (length - 1) / 2)
    return (centre + shift - (size - 1) / 2).round().clamp(0, length - size).long()


def _factor(uniform: Uniform, strength: float) -> torch.Tensor:
    return uniform(1 - strength, 1 + strength).view(-1, 1, 1, 1)


def _gray(images: torch.Tensor) -> torch.Tensor:
    weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def _rotate_hue(images: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate the I/Q chroma plane by ``angle`` (N,) radians, keeping luma Y fixed."""
    angle = angle.float()  # linalg.inv has no half-precision kernels
    to_yiq = _RGB_TO_YIQ.to(angle.device)
    rotation = torch.zeros(len(angle), 3, 3, device=angle.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = angle.cos(), -angle.sin()
    rotation[:, 2, 1], rotation[:, 2, 2] = angle.sin(), angle.cos()
    transform = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (N, 3, 3) in RGB space
    return torch.einsum("nij,njhw->nihw", transform.to(images.dtype), images)
