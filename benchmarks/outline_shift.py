"""Claim: at 128 px, IoU is decided by outlines finer than a scored pixel. Moving every outline of the
512 px ground truth by one 512 px pixel (a quarter of a 128 px pixel) already costs ~0.12.

Scores the ground truth against itself with its outlines moved, both resized by the pipeline's rule
(``preprocess.resize_mask``: box coverage at ``--size``, kept >= 0.5), from the fused masks of a
pipeline run: each mask grown (dilated) or shrunk (eroded) by r pixels at its own resolution, with
the 4-neighbour step, r = 1, 2, 3. Each target, and all of them as one mask, over all faces.

A model that scores IoU x at 128 px is as far from the truth, on average, as an outline moved by
the r at which this table crosses x: a yardstick for how much a recipe can still gain, since a hand-
drawn outline is itself not placed to the pixel.

    python benchmarks/outline_shift.py [--fused data/fused] [--size 128] [--max-shift 3]
"""

from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from eyelip.data.fuse import FusedMasks
from eyelip.data.preprocess import resize_mask


def grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` with each pixel's 4 neighbours added (one step of a binary dilation)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def shrink(mask: np.ndarray) -> np.ndarray:
    """``mask`` less its outline pixels (one step of a binary erosion; outside the frame is background)."""
    padded = np.pad(~mask, 1, constant_values=True)
    return ~grow(padded)[1:-1, 1:-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fused", default="data/fused", help="the fuse-masks stage's output")
    parser.add_argument("--size", type=int, default=128, help="the mask size IoU is measured at (resize.size)")
    parser.add_argument("--max-shift", type=int, default=3, help="largest outline move, in native pixels")
    args = parser.parse_args()
    fused = FusedMasks(args.fused)
    names = [*fused.targets, "one mask"]
    steps = {"grown": grow, "shrunk": shrink}
    counts = np.zeros((len(steps), args.max_shift, len(names), 2), np.int64)  # intersection, union
    for row in tqdm(range(len(fused)), desc="faces", unit="face"):
        masks = list(fused[row][: len(fused.targets)])
        masks.append(np.any(masks, axis=0))
        for c, mask in enumerate(masks):
            truth = resize_mask(mask, args.size)
            for k, step in enumerate(steps.values()):
                moved = mask
                for r in range(args.max_shift):  # each step moves the outline one more pixel
                    moved = step(moved)
                    shifted = resize_mask(moved, args.size)
                    counts[k, r, c] += [(shifted & truth).sum(), (shifted | truth).sum()]
    native = fused[0].shape[-1]
    print(
        f"{len(fused)} faces from {args.fused}: IoU at {args.size} px of the truth against itself, "
        f"outlines moved at {native} px"
    )
    for r in range(args.max_shift):
        for kind, table in zip(steps, counts[:, r]):
            ious = table[:, 0] / np.maximum(table[:, 1], 1)
            print(
                f"  {kind} by {r + 1} px ({(r + 1) * args.size / native:.2f} of a scored pixel): "
                + "  ".join(f"{n} {i:.4f}" for n, i in zip(names, ious))
            )


if __name__ == "__main__":
    main()
