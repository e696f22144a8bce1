"""Segmentation losses on logits of shape (N, C, H, W) against binary targets of the same shape.

Every target channel is an independent binary problem (sigmoid, not softmax), so soft
overlap scores are computed per channel and averaged.

Reductions of the soft overlap losses (``reduction``):

* ``"per_image"`` (default): intersection and union are summed over H, W only, giving one
  score per (image, channel), which are then averaged. Every face weighs the same whatever
  the size of its eyes or lips, so a few close-up faces do not dominate the gradient.
* ``"per_batch"``: sums over N, H, W, giving one score per channel (then averaged). A smoother,
  lower-variance surrogate of the pooled (dataset-level) IoU that :mod:`eyelip.model.metrics` reports;
  on real faces it scored above ``per_image`` (docs/experiments.md).

``smooth`` (default 1.0) is added to numerator and denominator. It keeps the loss finite and
differentiable when a target channel is empty, makes "empty target, empty prediction" score a
perfect 0 loss (the same convention as the metrics), and at one pixel it is negligible next to
the few hundred eye/lip pixels of a 128x128 face.

:class:`LovaszHingeLoss` (Berman et al., 2018) takes the same reductions. It is the convex Lovasz
extension of the Jaccard loss, applied to hinge errors of the logits: where the soft Jaccard scores
probabilities, it scores the thresholded mask, equalling its ``1 - IoU`` when the errors are 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from eyelip.params.train import LossParams, Reduction

_REDUCTIONS = get_args(Reduction)


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_shapes(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape != targets.shape or logits.ndim != 4:
        raise ValueError(
            f"logits and targets must both be (N, C, H, W), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )


def _soft_overlap(
    logits: torch.Tensor, targets: torch.Tensor, reduction: Reduction
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft intersection and sum of cardinalities |P| + |T|, summed per the reduction."""
    _check_shapes(logits, targets)
    # Sum in float32 even under autocast: fp16 sums of 16k pixels lose precision.
    probs = torch.sigmoid(logits.float())
    targets = targets.float()
    dims = (2, 3) if reduction == "per_image" else (0, 2, 3)
    intersection = (probs * targets).sum(dims)
    cardinality = probs.sum(dims) + targets.sum(dims)
    return intersection, cardinality


class _SoftOverlapLoss(nn.Module):
    def __init__(self, smooth: float = 1.0, reduction: Reduction = "per_image") -> None:
        super().__init__()
        _check_reduction(reduction)
        if smooth <= 0:
            raise ValueError(f"smooth must be > 0, got {smooth}")
        self.smooth = smooth
        self.reduction = reduction


class JaccardLoss(_SoftOverlapLoss):
    """Soft Jaccard (IoU) loss ``1 - (I + smooth) / (U + smooth)`` on sigmoid probabilities.

    ``I = sum(p * t)`` and ``U = sum(p) + sum(t) - I``; see the module docstring for
    ``reduction`` and ``smooth``. Returns a scalar: the mean over images (per_image) and
    channels.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        intersection, cardinality = _soft_overlap(logits, targets, self.reduction)
        union = cardinality - intersection
        return (1 - (intersection + self.smooth) / (union + self.smooth)).mean()


class DiceLoss(_SoftOverlapLoss):
    """Soft Dice loss ``1 - (2 I + smooth) / (|P| + |T| + smooth)``; reductions as
    :class:`JaccardLoss`."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        intersection, cardinality = _soft_overlap(logits, targets, self.reduction)
        return (1 - (2 * intersection + self.smooth) / (cardinality + self.smooth)).mean()


class LovaszHingeLoss(nn.Module):
    """Lovasz hinge: the Lovasz extension of the Jaccard loss, evaluated at the hinge errors
    ``max(0, 1 - logit * (2 t - 1))`` sorted in decreasing order (Berman et al., 2018, eq. 9-10).

    Each group of pixels is one (image, channel) with ``per_image``, one channel over the batch with
    ``per_batch``; the groups' losses are averaged. On hinge errors that are all 0 or 1 it equals
    ``1 - IoU`` of the mask that gets the pixels with error 1 wrong; a group with an empty target
    costs its largest error (the most confident false positive). Targets must be binary.
    """

    def __init__(self, reduction: Reduction = "per_image") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, targets)
        n, c = logits.shape[:2]
        if self.reduction == "per_image":
            logits, targets = logits.reshape(n * c, -1), targets.reshape(n * c, -1)
        else:
            logits, targets = logits.transpose(0, 1).reshape(c, -1), targets.transpose(0, 1).reshape(c, -1)
        targets = targets.float()
        errors = 1 - logits.float() * (2 * targets - 1)
        errors, order = errors.sort(dim=1, descending=True)
        truth = targets.gather(1, order)
        # Gradient of the Lovasz extension: Jaccard loss of each prefix of the sorted pixels, differenced.
        positives = truth.sum(1, keepdim=True)
        jaccard = 1 - (positives - truth.cumsum(1)) / (positives + (1 - truth).cumsum(1))
        grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
        return (F.relu(errors) * grad).sum(1).mean()


class CombinedLoss(nn.Module):
    """Weighted sum ``jaccard * Jaccard + bce * BCE + dice * Dice + lovasz * LovaszHinge``.

    ``forward`` returns ``(total, components)``: ``total`` is the differentiable weighted sum,
    ``components`` maps ``"jaccard_loss"`` / ``"bce_loss"`` / ``"dice_loss"`` / ``"lovasz_loss"`` to
    the detached, *unweighted* value of each term with a non-zero weight, for logging.

    BCE is the mean over all pixels. ``pos_weight`` (a float, or one value per channel)
    up-weights positive pixels, which are ~1.6% of a face.
    """

    def __init__(  # no defaults: those of the ``train.loss`` section (eyelip.params.train.LossParams) apply
        self,
        jaccard: float,
        bce: float,
        dice: float,
        lovasz: float,
        smooth: float,
        reduction: Reduction,
        pos_weight: float | Sequence[float] | None,
    ) -> None:
        super().__init__()
        weights = {"jaccard": jaccard, "bce": bce, "dice": dice, "lovasz": lovasz}
        for name, weight in weights.items():
            if weight < 0:
                raise ValueError(f"{name} weight must be >= 0, got {weight}")
        if not any(weights.values()):
            raise ValueError(f"at least one of the {', '.join(weights)} weights must be > 0")
        self.weights = {name: float(w) for name, w in weights.items() if w > 0}
        self.jaccard = JaccardLoss(smooth, reduction)
        self.dice = DiceLoss(smooth, reduction)
        self.lovasz = LovaszHingeLoss(reduction)
        # A (C, 1, 1) buffer broadcasts over (N, C, H, W) and follows .to(device).
        weight_tensor = None
        if pos_weight is not None:
            weight_tensor = torch.as_tensor(pos_weight, dtype=torch.float32).reshape(-1, 1, 1)
        self.register_buffer("pos_weight", weight_tensor)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = {}
        if "jaccard" in self.weights:
            terms["jaccard"] = self.jaccard(logits, targets)
        if "dice" in self.weights:
            terms["dice"] = self.dice(logits, targets)
        if "lovasz" in self.weights:
            terms["lovasz"] = self.lovasz(logits, targets)
        if "bce" in self.weights:
            terms["bce"] = F.binary_cross_entropy_with_logits(
                logits.float(), targets.float(), pos_weight=self.pos_weight
            )
        total = sum(self.weights[name] * value for name, value in terms.items())
        components = {f"{name}_loss": value.detach() for name, value in terms.items()}
        return total, components


def build_loss(cfg: LossParams) -> CombinedLoss:
    """The :class:`CombinedLoss` of the ``train.loss`` params section (checked by :mod:`eyelip.params.train`)."""
    return CombinedLoss(**cfg.model_dump())
