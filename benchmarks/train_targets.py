"""Claim: with `resize.train_scale` t > 1, 0/1 training masks made by the ground truth's rule at
t x the mask size cap the IoU that the block-averaged prediction can reach; coverage targets do not.

The U-Net predicts at t x S and is scored at S by averaging each t x t block of probabilities and
keeping >= 0.5 (`model.block_logits`). This feeds it a perfect fit of each kind of training target
(the targets themselves) and scores that against the masks at S, from the fused 512 px masks of a
pipeline run:

- rule: each fine pixel's coverage by the 512 px mask, kept >= 0.5 (0/1), as eyelip trains
  (`train_masks.npy`);
- coverage: each fine pixel's coverage (0-1), whose block means are the coarse coverage exactly.

The ceiling is not the whole story: trained on coverage, the U-Net scored lower on fold 0 of the mini
set (docs/experiments.md), so eyelip keeps the 0/1 masks.

    python benchmarks/train_targets.py [--fused data/fused] [--size 128] [--train-scale 2]
"""

from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from eyelip.data.fuse import FusedMasks
from eyelip.data.preprocess import mask_coverage, resize_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fused", default="data/fused", help="the fuse-masks stage's output")
    parser.add_argument("--size", type=int, default=128, help="the mask size IoU is measured at (resize.size)")
    parser.add_argument("--train-scale", type=int, default=2, help="resize.train_scale")
    args = parser.parse_args()
    fused, t = FusedMasks(args.fused), args.train_scale
    fine = args.size * t
    names = list(fused.targets)
    counts = {kind: np.zeros((len(names), 3), np.int64) for kind in ("rule", "coverage")}  # tp, fp, fn
    for row in tqdm(range(len(fused)), desc="faces", unit="face"):
        for c, mask in enumerate(fused[row][: len(names)]):
            truth = resize_mask(mask, args.size)
            coverage = mask_coverage(mask, fine).astype(np.float64) / 255
            # "rule": the 0/1 masks the resize stage trains on (train_masks.npy), by the same function
            for kind, target in (("rule", resize_mask(mask, fine)), ("coverage", coverage)):
                pred = target.reshape(args.size, t, args.size, t).mean((1, 3)) >= 0.5
                counts[kind][c] += [(pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()]
    print(
        f"{len(fused)} faces from {args.fused}: a perfect fit of the {fine} px training targets, "
        f"{t}x{t}-averaged and kept >= 0.5, against the {args.size} px masks"
    )
    ious = {}
    for kind, table in counts.items():
        tp, fp, fn = table.T.astype(np.float64)
        ious[kind] = tp / (tp + fp + fn)
        print(
            f"  {kind:9s} "
            + "  ".join(
                f"{n}: IoU {i:.4f} (precision {p:.4f}, recall {r:.4f})"
                for n, i, p, r in zip(names, ious[kind], tp / (tp + fp), tp / (tp + fn))
            )
        )
    print(
        "ratio coverage / rule (IoU ceiling): "
        + "  ".join(f"{n} {c / r:.3f}x" for n, c, r in zip(names, ious["coverage"], ious["rule"]))
    )


if __name__ == "__main__":
    main()
