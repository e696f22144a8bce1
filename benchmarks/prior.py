"""Claim: `resize.prior: facemesh` costs the resize stage a few times its time, and buys IoU;
`facemesh_flip` (the mesh on the photo and its mirror image, averaged) costs ~1.3x the single mesh,
for steadier outlines.

Cost: the resize stage on the real mini set with and without each prior, same samples, same workers,
in the same run (ratio > 1 is the prior's cost; the stage runs once per data version, training runs
many times on its output). Quality: the face-mesh outlines alone, without any training, scored
against the ground truth (IoU per target and as one mask), which is what the U-Net starts from.

    python benchmarks/prior.py [--data ../shared/celebamask-hq-mini] [--n-jobs -1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from eyelip.data.dataset import ResizedArrays
from eyelip.data.fuse import fuse_dataset
from eyelip.data.resize import resize_dataset
from eyelip.data.source import Source

TARGETS = {"eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    return float((pred & truth).sum() / max((pred | truth).sum(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/celebamask-hq-mini", help="CelebAMask-HQ folder or zip")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n-jobs", type=int, default=-1)
    args = parser.parse_args()
    source = Source(Path(args.data))
    with tempfile.TemporaryDirectory() as tmp:
        fused = Path(tmp) / "fused"
        fuse_dataset(source, fused, TARGETS, n_jobs=args.n_jobs)
        seconds = {}
        for prior in ("none", "facemesh", "facemesh_flip"):
            tic = time.perf_counter()
            resize_dataset(source, fused, Path(tmp) / prior, args.size, n_jobs=args.n_jobs, prior=prior)
            seconds[prior] = time.perf_counter() - tic
        n = len(ResizedArrays(Path(tmp) / "none").ids)
        for prior in ("facemesh", "facemesh_flip"):
            arrays = ResizedArrays(Path(tmp) / prior)
            outlines = np.asarray(arrays.images[..., 3:]).transpose(0, 3, 1, 2) >= 128
            truth = np.asarray(arrays.masks) > 0
            found = outlines.reshape(len(outlines), -1).any(1).mean()
            print(
                f"resize stage, {n} faces: photo only {seconds['none']:.1f} s, with {prior} {seconds[prior]:.1f} s "
                f"({seconds[prior] / seconds['none']:.1f}x; {1000 * (seconds[prior] - seconds['none']) / n:.1f} "
                f"ms per face)"
            )
            print(
                f"  face found in {found:.1%} of photos; outlines alone vs ground truth: "
                + ", ".join(f"{name} IoU {iou(outlines[:, c], truth[:, c]):.3f}" for c, name in enumerate(TARGETS))
                + f", one mask {iou(outlines.any(1), truth.any(1)):.3f}"
            )


if __name__ == "__main__":
    main()
