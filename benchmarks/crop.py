"""Claim: with `train.augment.crop: 64` (each training face a 64 px window around its eyes and lips)
a U-Net twice as wide trains at about the speed of the plain one on whole 128 px faces: a quarter of
the pixels pays for four times the multiply-adds per pixel.

Times eyelip's `Trainer` (params.yaml `model` and `train`, the full augmentation included) on the same
random batches: whole faces at `model.base_width`, then `--crop` windows at `--width` (default: twice
the base width). The two alternate `--rounds` times and the best of each counts, so that a busy
machine favours neither. Prints images per second and the ratio.

    python benchmarks/crop.py [--steps 20] [--crop 64] [--width 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np

from eyelip import params as P
from eyelip.train import TrainConfig
from train_throughput import eyelip, random_arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--crop", type=int, default=64, help="window size in mask pixels")
    parser.add_argument("--width", type=int, default=None, help="base width with the crop (default: twice params')")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    params = P.load()
    whole = TrainConfig.from_params(params)
    whole.augment = {**whole.augment, "crop": 0}
    cropped = copy.deepcopy(whole)
    cropped.augment["crop"] = args.crop
    cropped.model["base_width"] = args.width or 2 * whole.model.get("base_width", 16)
    size = P.integer(params, "resize.size")
    n = whole.batch_size * (args.steps + 2)
    with tempfile.TemporaryDirectory() as tmp:
        arrays = random_arrays(Path(tmp), n, size)
        warm, rows = np.arange(whole.batch_size * 2), np.arange(whole.batch_size * 2, n)
        configs = {"whole": whole, "crop": cropped}
        for cfg in configs.values():
            eyelip(cfg, arrays, warm)  # warm-up: allocator, oneDNN kernel choice
        runs: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, cfg in configs.items():
                runs[name].append(eyelip(cfg, arrays, rows))
        speed = {name: max(values) for name, values in runs.items()}
    print(f"{size} px faces, batch {whole.batch_size}, {args.steps} steps, best of {args.rounds}")
    print(f"whole faces, base width {whole.model.get('base_width', 16)}: {speed['whole']:6.1f} img/s")
    print(f"{args.crop} px crops, base width {cropped.model['base_width']}: {speed['crop']:6.1f} img/s")
    print(f"speed with crops / whole faces: {speed['crop'] / speed['whole']:.2f}x")


if __name__ == "__main__":
    main()
