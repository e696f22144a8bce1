"""U-Net for binary multi-label segmentation (one sigmoid channel per target).

Architecture (Ronneberger et al. 2015, with "same" padding so output size == input size):

* encoder: ``depth`` levels of [double 3x3 conv -> 2x2 max-pool]; width doubles per level,
  starting at ``base_width``;
* bottleneck: double 3x3 conv at ``base_width * 2**depth``, followed by channel dropout;
* decoder: ``depth`` levels of [2x2 stride-2 ConvTranspose2d (halves width) -> concat skip ->
  double 3x3 conv];
* head: 1x1 conv to ``out_channels`` logits.

``block="residual"`` adds a shortcut around each double conv (identity, or 1x1 conv + norm where
the width changes; ReLU after the sum, as ResNet's basic block). ``block="depthwise"`` makes each
3x3 conv depthwise-separable (a 3x3 conv per channel, then a 1x1 conv across channels, as in
MobileNet): about 1/8 of the multiply-adds at the same width. On a CPU they run far below that
count, so a wider depthwise U-Net trains no faster than the plain one (``benchmarks/model_variant.py``,
docs/experiments.md): they buy width only where depthwise convs are fast.

With ``input_scale`` s > 1 the input image is s times larger than the output: a space-to-depth
step (``PixelUnshuffle``) folds each s x s pixel block into channels before the first conv. The
network then runs at the output size, so it sees the finer detail of the larger photo (thin eyes and
lips at 128 px) for the cost of a wider first conv only.

With ``output_scale`` o > 1 (``resize.train_scale``) the network predicts at o times the output size
and is trained there, against masks made by the ground truth's own rule at that size; its output at
the output size is the logit of each o x o block's mean probability (:func:`block_logits`), so a
pixel is foreground when the fine pixels' probabilities average >= 0.5. The ground truth at 128 px is
itself the mean of 4x4 blocks of the 512 px mask, kept >= 0.5; averaging 2x2 blocks of a 256 px
prediction follows the same rule. In training mode the model returns the fine logits, to be trained
against the fine masks; in eval mode (validation, evaluation, export) the block-averaged ones.

With ``prior_gate`` g > 0 (input channels after R, G, B are a prior's outline maps, ``resize.prior``)
the eval-mode output is kept only within g output pixels of the prior's outlines: logits farther out
are set to -20 (probability 2e-9). The U-Net trains on windows around the targets
(``train.augment.crop``) and never sees the rest of the face there, so now and then it marks a
patch of hair or background; the prior says where eyes and lips can be. A face whose prior is empty
(the mesh found no face) is left as predicted.

Upsampling uses ``ConvTranspose2d`` rather than bilinear + conv: it is learnable, exports to
ONNX as a single op, and with kernel 2 / stride 2 it has no checkerboard overlap.

Dropout (``nn.Dropout2d``) is applied only at the bottleneck, where most parameters and the
widest receptive field live; dropping decoder features would mostly blur the fine boundaries
that dominate IoU on small parts such as eyes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from eyelip.params.model import ModelParams

Norm = Literal["batch", "group", "none"]
Block = Literal["plain", "residual", "depthwise"]

_NORMS = ("batch", "group", "none")
_BLOCKS = ("plain", "residual", "depthwise")
_GROUPS = 8  # GroupNorm group count; gcd() keeps it a divisor of any width


def _norm_layer(norm: Norm, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(_GROUPS, channels), channels)
    return nn.Identity()


def _conv3x3(in_channels: int, out_channels: int, bias: bool, separable: bool) -> nn.Module:
    if not separable:
        return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.Conv2d(in_channels, out_channels, 1, bias=bias),
    )


class DoubleConv(nn.Sequential):
    """Two [3x3 conv -> norm -> ReLU] blocks; the conv bias is dropped when a norm follows.
    ``separable``: each 3x3 conv is depthwise 3x3 + pointwise 1x1."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm, separable: bool = False) -> None:
        bias = norm == "none"
        super().__init__(
            _conv3x3(in_channels, out_channels, bias, separable),
            _norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            _conv3x3(out_channels, out_channels, bias, separable),
            _norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class ResidualConv(nn.Module):
    """:class:`DoubleConv` plus a shortcut (1x1 conv + norm where the width changes), ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm) -> None:
        super().__init__()
        body = DoubleConv(in_channels, out_channels, norm)
        self.body = nn.Sequential(*list(body)[:-1])  # the last ReLU comes after the sum
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=norm == "none"), _norm_layer(norm, out_channels)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _conv_block(block: Block, in_channels: int, out_channels: int, norm: Norm) -> nn.Module:
    if block == "residual":
        return ResidualConv(in_channels, out_channels, norm)
    return DoubleConv(in_channels, out_channels, norm, separable=block == "depthwise")


class UpBlock(nn.Module):
    """Upsample x2 with a transposed conv, concatenate the encoder skip, double conv."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm, block: Block = "plain") -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = _conv_block(block, 2 * out_channels, out_channels, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """U-Net returning logits of shape (N, out_channels, H, W).

    Args:
        in_channels: input channels: R, G, B and any prior channels (``eyelip.data.prior``).
        out_channels: number of independent binary targets (one logit map each).
        base_width: channels of the first encoder level; doubles at every level.
        depth: number of down-sampling steps; H and W must be divisible by ``2**depth``.
        norm: "batch" (BatchNorm2d), "group" (GroupNorm, for small batches) or "none".
        dropout: ``Dropout2d`` probability at the bottleneck (0 disables).
        input_scale: input H/W over output H/W (1 = same size).
        output_scale: the network's own output H/W over the output H/W (a divisor of
            ``input_scale``); the space-to-depth factor is ``input_scale / output_scale``.
        block: "plain" (the reference notebook's double conv), "residual" (double conv + shortcut) or
            "depthwise" (double depthwise-separable conv).
        prior_gate: in eval mode, keep the output within this many output pixels of the prior's
            outlines (input channels 3 on); 0 = off.

    The reference notebook's full-size network is ``base_width=64, depth=4``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        base_width: int = 16,
        depth: int = 4,
        norm: Norm = "batch",
        dropout: float = 0.0,
        input_scale: int = 1,
        block: Block = "plain",
        output_scale: int = 1,
        prior_gate: int = 0,
    ) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if base_width < 1:
            raise ValueError(f"base_width must be >= 1, got {base_width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if input_scale < 1:
            raise ValueError(f"input_scale must be >= 1, got {input_scale}")
        if output_scale < 1 or input_scale % output_scale:
            raise ValueError(f"output_scale must be a divisor of input_scale {input_scale}, got {output_scale}")
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {_BLOCKS}, got {block!r}")
        if isinstance(prior_gate, bool) or not isinstance(prior_gate, int) or prior_gate < 0:
            raise ValueError(f"model.prior_gate: expected a whole number of pixels >= 0, got {prior_gate!r}")
        if prior_gate and in_channels <= 3:
            raise ValueError(
                "model.prior_gate: needs prior channels after R, G, B; set resize.prior "
                "(e.g. facemesh) or model.prior_gate: 0"
            )
        self.prior_gate = prior_gate
        self.in_channels, self.depth, self.input_scale = in_channels, depth, input_scale
        self.output_scale, self.out_channels = output_scale, out_channels
        fold = input_scale // output_scale  # space-to-depth factor: input pixels per fine output pixel
        self.unshuffle = nn.PixelUnshuffle(fold) if fold > 1 else nn.Identity()

        widths = [base_width * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        channels = in_channels * fold**2
        for width in widths[:-1]:
            self.encoders.append(_conv_block(block, channels, width, norm))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _conv_block(block, widths[-2], widths[-1], norm)
        self.dropout = nn.Dropout2d(dropout)
        self.decoders = nn.ModuleList(UpBlock(widths[i + 1], widths[i], norm, block) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the output size; in training mode at ``output_scale`` times it."""
        # Eager-mode only: under jit.trace / ONNX / torch.export the sizes are symbolic and a
        # Python branch on them would be baked in (or become a guard); a bad size still fails
        # there, less readably, at the skip concatenation.
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self._check_size(x)
        prior = x[:, 3:] if self.prior_gate else None
        x = self.unshuffle(x)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for decoder, skip in zip(self.decoders, reversed(skips)):
            x = decoder(x, skip)
        logits = self.head(x)
        if self.training:
            return logits
        logits = block_logits(logits, self.output_scale, self.out_channels)
        return logits if prior is None else prior_gated(logits, prior, self.prior_gate)

    def _check_size(self, x: torch.Tensor) -> None:
        # The U-Net halves the folded input depth times; block averaging needs whole blocks.
        multiple = math.lcm(self.input_scale // self.output_scale * 2**self.depth, self.input_scale)
        height, width = x.shape[-2:]
        if height % multiple or width % multiple:
            raise ValueError(
                f"UNet(depth={self.depth}, input_scale={self.input_scale}, output_scale={self.output_scale}) "
                f"needs H and W divisible "
                f"by {multiple}, got {height}x{width}"
            )


def block_logits(logits: torch.Tensor, k: int, channels: int) -> torch.Tensor:
    """(N, C, H, W) logits -> (N, C, H/k, W/k): the logit of each k x k block's mean probability,
    log(sum sigmoid) - log(sum (1 - sigmoid)) in log space (exact where probabilities saturate)."""
    if k == 1:
        return logits

    def log_block_sum(log_p: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(log_p, k).unflatten(1, (channels, k * k)).logsumexp(2)

    return log_block_sum(F.logsigmoid(logits)) - log_block_sum(F.logsigmoid(-logits))


def prior_gated(logits: torch.Tensor, prior: torch.Tensor, reach: int) -> torch.Tensor:
    """``logits`` (N, C, S, S) set to -20 farther than ``reach`` pixels (Chebyshev) from any non-zero
    pixel of ``prior`` (N, P, kS, kS), except in images whose prior is all zero."""
    scale = prior.shape[-1] // logits.shape[-1]
    near = F.max_pool2d(prior.amax(1, keepdim=True), scale)  # any prior in each output pixel's footprint
    near = F.max_pool2d(near, 2 * reach + 1, stride=1, padding=reach) > 0
    found = prior.amax((1, 2, 3)).view(-1, 1, 1, 1) > 0
    return torch.where(near | ~found, logits, torch.full_like(logits, -20.0))


def build_model(
    cfg: ModelParams | Mapping[str, Any],
    out_channels: int,
    in_channels: int = 3,
    input_scale: int = 1,
    output_scale: int = 1,
) -> UNet:
    """Build a :class:`UNet` from the ``model`` params section, or from a saved model's copy of it (a mapping
    whose missing keys take the section's defaults; an unknown key is a ``ValueError``).

    ``input_scale`` and ``output_scale`` come from the data (``resize.input_scale``, ``resize.train_scale``),
    not from ``cfg``.
    """
    cfg = ModelParams.model_validate(cfg)
    return UNet(
        in_channels=in_channels,
        out_channels=out_channels,
        input_scale=input_scale,
        output_scale=output_scale,
        **cfg.model_dump(),
    )
