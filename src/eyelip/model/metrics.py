"""Binary segmentation metrics, all derived from one set of confusion counts.

:func:`confusion` turns probabilities and binary targets of shape (N, C, H, W) into integer
counts ``(tp, fp, fn, tn)`` of shape (N, C, 4). Every score (:func:`iou`, :func:`dice`,
:func:`precision`, :func:`recall`, :func:`accuracy`) is computed from such counts, so training,
evaluation, tests and the CLI cannot disagree, and both reductions come from the same numbers:

* ``"pooled"``: counts are summed over images first, then the score is taken per channel
  (dataset-level IoU = total intersection / total union). Large objects weigh more.
* ``"per_image"``: the score is taken per image and channel, then averaged over images.
  Every image weighs the same.
* ``"none"``: per-image, per-channel scores of shape (N, C), e.g. to find the worst images.

``"pooled"`` and ``"per_image"`` return one score per channel, shape (C,); average it for a
single macro score.

Empty case: a score whose denominator is 0 is defined as 1.0. For IoU and Dice that means
prediction and target are both empty, which is a perfect answer (e.g. no visible eyes behind
sunglasses); for precision nothing was predicted, for recall there was nothing to find.
The convention matches the ``smooth`` term of :mod:`eyelip.model.losses`.

Inputs must be torch tensors (convert numpy arrays with ``torch.from_numpy``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

Reduction = Literal["pooled", "per_image", "none"]

_REDUCTIONS = ("pooled", "per_image", "none")


def confusion(probs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Confusion counts per image and channel.

    Args:
        probs: probabilities in [0, 1], shape (N, C, H, W); apply ``torch.sigmoid`` to logits
            first, so that ``threshold`` keeps its meaning as a probability.
        targets: binary targets (any dtype, values 0/1), same shape as ``probs``.
        threshold: a pixel is predicted positive when ``probs >= threshold``.

    Returns:
        int64 tensor of shape (N, C, 4) holding ``(tp, fp, fn, tn)``, on ``probs.device``.
    """
    if not isinstance(probs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError("probs and targets must be torch tensors")
    if probs.shape != targets.shape or probs.ndim != 4:
        raise ValueError(
            f"probs and targets must both be (N, C, H, W), got {tuple(probs.shape)} and {tuple(targets.shape)}"
        )
    pred = probs >= threshold
    true = targets >= 0.5
    tp = (pred & true).sum((2, 3))
    fp = (pred & ~true).sum((2, 3))
    fn = (~pred & true).sum((2, 3))
    tn = probs.shape[2] * probs.shape[3] - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], dim=-1)


# (tp, fp, fn, tn) -> (numerator, denominator)
_Ratio = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _score(counts: torch.Tensor, ratio: _Ratio, reduction: Reduction) -> torch.Tensor:
    """Apply ``ratio`` (0/0 -> 1) to (N, C, 4) or (C, 4) counts with the given reduction."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if counts.shape[-1] != 4:
        raise ValueError(f"counts must have a last dimension of 4, got {tuple(counts.shape)}")
    if reduction != "pooled" and counts.ndim != 3:
        raise ValueError(f"reduction={reduction!r} needs per-image counts (N, C, 4)")
    counts = counts.double()  # exact for any realistic pixel count
    if reduction == "pooled" and counts.ndim == 3:
        counts = counts.sum(0)
    num, den = ratio(*counts.unbind(-1))
    # where() rather than an epsilon: the empty case is exactly 1, the others exact ratios.
    score = torch.where(den > 0, num / den.clamp(min=1), torch.ones_like(num))
    return score.mean(0) if reduction == "per_image" else score


def iou(counts: torch.Tensor, reduction: Reduction = "pooled") -> torch.Tensor:
    """Intersection over union ``tp / (tp + fp + fn)``; 1.0 when both masks are empty."""
    return _score(counts, lambda tp, fp, fn, tn: (tp, tp + fp + fn), reduction)


def dice(counts: torch.Tensor, reduction: Reduction = "pooled") -> torch.Tensor:
    """Dice / F1 ``2 tp / (2 tp + fp + fn)``; 1.0 when both masks are empty."""
    return _score(counts, lambda tp, fp, fn, tn: (2 * tp, 2 * tp + fp + fn), reduction)


def precision(counts: torch.Tensor, reduction: Reduction = "pooled") -> torch.Tensor:
    """``tp / (tp + fp)``; 1.0 when nothing is predicted."""
    return _score(counts, lambda tp, fp, fn, tn: (tp, tp + fp), reduction)


def recall(counts: torch.Tensor, reduction: Reduction = "pooled") -> torch.Tensor:
    """``tp / (tp + fn)``; 1.0 when the target is empty."""
    return _score(counts, lambda tp, fp, fn, tn: (tp, tp + fn), reduction)


def accuracy(counts: torch.Tensor, reduction: Reduction = "pooled") -> torch.Tensor:
    """Pixel accuracy ``(tp + tn) / total``; near 1 for any sparse mask, so never the headline."""
    return _score(counts, lambda tp, fp, fn, tn: (tp + tn, tp + fp + fn + tn), reduction)


class ConfusionMeter:
    """Accumulates confusion counts over batches.

    Per-image counts are kept (4 integers per image and channel) so that :meth:`compute` can
    report pooled and per-image scores from the same numbers.

    Args:
        threshold: probability threshold, see :func:`confusion`.
        names: optional target names, one per channel, for per-channel keys in :meth:`compute`.
    """

    def __init__(self, threshold: float = 0.5, names: Sequence[str] | None = None) -> None:
        self.threshold = threshold
        self.names = list(names) if names is not None else None
        self._counts: list[torch.Tensor] = []

    def reset(self) -> None:
        self._counts = []

    @torch.no_grad()
    def update(self, probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Add a batch of probabilities and targets; returns its (N, C, 4) counts."""
        counts = confusion(probs, targets, self.threshold)
        # Kept on the device: no host sync per batch; moved to CPU once in counts().
        self._counts.append(counts)
        return counts

    def counts(self) -> torch.Tensor:
        """All per-image counts so far, shape (N_total, C, 4), on the CPU."""
        if not self._counts:
            raise RuntimeError("ConfusionMeter.counts() called before any update()")
        return torch.cat(self._counts).cpu()

    def compute(self) -> dict[str, float]:
        """Scores macro-averaged over channels.

        Keys: ``iou`` (pooled), ``iou_per_image``, ``dice``, ``precision``, ``recall``,
        ``accuracy`` (pooled), and ``iou_<name>`` / ``iou_per_image_<name>`` per channel when
        ``names`` were given.
        """
        counts = self.counts()
        pooled_iou = iou(counts, "pooled")
        per_image_iou = iou(counts, "per_image")
        result = {
            "iou": pooled_iou.mean().item(),
            "iou_per_image": per_image_iou.mean().item(),
            "dice": dice(counts).mean().item(),
            "precision": precision(counts).mean().item(),
            "recall": recall(counts).mean().item(),
            "accuracy": accuracy(counts).mean().item(),
        }
        if self.names is not None:
            if len(self.names) != counts.shape[1]:
                raise ValueError(f"{len(self.names)} names given for {counts.shape[1]} channels")
            for i, name in enumerate(self.names):
                result[f"iou_{name}"] = pooled_iou[i].item()
                result[f"iou_per_image_{name}"] = per_image_iou[i].item()
        return result
