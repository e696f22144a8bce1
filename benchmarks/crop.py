"""Claims: training on windows around the targets (`train.augment.crop`) buys width or resolution for
about the cost of whole 128 px faces at the base width (benchmarks/README.md):

- `--crop 64 --width 32`: a U-Net twice as wide on 64 px windows (a quarter of the pixels pays for
  four times the multiply-adds per pixel);
- `--crop 128 --train-scale 2`: the same U-Net trained at twice the resolution (`resize.input_scale`
  and `resize.train_scale` 2: 256 px photos and masks) on 128 px windows of them.

Times eyelip's `Trainer` (params.yaml `model` and `train`, the full augmentation included) on random
batches: whole faces at `model.base_width`, then `--crop` windows at `--width` (default: twice the
base width, or the base width with `--train-scale` > 1). The two alternate `--rounds` times and the
best of each counts, so that a busy machine favours neither. Prints images per second and the ratio.

    python benchmarks/crop.py [--steps 20] [--crop 64] [--width 32] [--train-scale 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from train_throughput import eyelip, random_arrays

from eyelip.params import whole as P
from eyelip.training.loop import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--crop", type=int, default=64, help="window size in training-mask pixels")
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="base width with the crop (default: twice params', or params' with --train-scale > 1)",
    )
    parser.add_argument("--train-scale", type=int, default=1, help="photos and training masks at this x the size")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    params = P.load()
    whole = TrainConfig.from_params(params)
    whole = whole.model_copy(update={"augment": whole.augment.model_copy(update={"crop": 0})})
    base = whole.model.base_width
    cropped = whole.model_copy(
        update={
            "augment": whole.augment.model_copy(update={"crop": args.crop}),
            "model": whole.model.model_copy(
                update={"base_width": args.width or (base if args.train_scale > 1 else 2 * base)}
            ),
        }
    )
    size = params.resize.size
    n = whole.batch_size * (args.steps + 2)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "whole").mkdir()
        (Path(tmp) / "crop").mkdir()
        arrays = {
            "whole": random_arrays(Path(tmp) / "whole", n, size),
            "crop": random_arrays(Path(tmp) / "crop", n, size, args.train_scale, args.train_scale),
        }
        warm, rows = np.arange(whole.batch_size * 2), np.arange(whole.batch_size * 2, n)
        configs = {"whole": whole, "crop": cropped}
        for name, cfg in configs.items():
            eyelip(cfg, arrays[name], warm)  # warm-up: allocator, oneDNN kernel choice
        runs: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, cfg in configs.items():
                runs[name].append(eyelip(cfg, arrays[name], rows))
        speed = {name: max(values) for name, values in runs.items()}
    fine = size * args.train_scale
    print(f"{size} px faces, batch {whole.batch_size}, {args.steps} steps, best of {args.rounds}")
    print(f"whole {size} px faces, base width {base}: {speed['whole']:6.1f} img/s")
    print(f"{args.crop} px crops of {fine} px faces, base width {cropped.model.base_width}: {speed['crop']:6.1f} img/s")
    print(f"speed with crops / whole faces: {speed['crop'] / speed['whole']:.2f}x")


if __name__ == "__main__":
    main()
