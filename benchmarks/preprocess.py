"""Claim: fuse-masks + resize run >= 3x faster than a naive sequential baseline on 2 cores.

Baseline (measured in the same run, on the same samples): one process, full-resolution JPEG
decode, then resize; part masks decoded and ORed one by one. eyelip: reduced-scale JPEG decode
(`Image.draft`), joblib workers, streamed memory-mapped output.

    python benchmarks/preprocess.py [--data ../shared/celebamask-hq-mini] [--size 128] [--n-jobs -1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from eyelip.fuse import fuse_dataset
from eyelip.layout import image_relpath, mask_relpath
from eyelip.preprocess import resize_mask
from eyelip.resize import resize_dataset
from eyelip.source import Source

TARGETS = {"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}


def naive(root: Path, ids: list[int], size: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.zeros((len(ids), size, size, 3), np.uint8)
    masks = np.zeros((len(ids), 1, size, size), np.uint8)
    for row, sample_id in enumerate(ids):
        photo = Image.open(root / image_relpath(sample_id)).convert("RGB")  # full-resolution decode
        images[row] = np.asarray(photo.resize((size, size), Image.Resampling.BILINEAR))
        fused = None
        for part in TARGETS["eyes_lips"]:
            path = root / mask_relpath(sample_id, part)
            if path.exists():
                mask = np.asarray(Image.open(path).convert("L")) > 0
                fused = mask if fused is None else fused | mask
        masks[row, 0] = resize_mask(fused, size) if fused is not None else 0
    return images, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "celebamask-hq-mini"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n-jobs", type=int, default=-1)
    args = parser.parse_args()
    source = Source(args.data)
    ids = source.ids()

    tic = time.perf_counter()
    naive(Path(args.data), ids, args.size)
    baseline = len(ids) / (time.perf_counter() - tic)

    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        fuse_dataset(source, Path(tmp) / "fused", TARGETS, n_jobs=args.n_jobs)
        resize_dataset(source, Path(tmp) / "fused", Path(tmp) / "resized", args.size, n_jobs=args.n_jobs)
        ours = len(ids) / (time.perf_counter() - tic)

    print(f"{len(ids)} samples from {args.data} at {args.size} px")
    print(f"naive sequential baseline: {baseline:7.1f} samples/s")
    print(f"eyelip fuse-masks+resize:  {ours:7.1f} samples/s (n_jobs={args.n_jobs})")
    print(f"speed-up: {ours / baseline:.2f}x")


if __name__ == "__main__":
    main()
