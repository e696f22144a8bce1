"""Claim: `resize.input_scale: 2` (photos at twice the mask size, folded into channels by the U-Net's
first step) costs little training speed, because the network still runs at the mask size.

Times eyelip's `Trainer` (params.yaml `model` and `train`) on the same number of random batches at
input scale 1 and at `--input-scale`, in this process, one after the other, and prints the ratio.

    python benchmarks/input_scale.py [--steps 20] [--input-scale 2]
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
    parser.add_argument("--input-scale", type=int, default=2)
    args = parser.parse_args()
    params = P.load()
    cfg = TrainConfig.from_params(params)
    size = params.resize.size
    n = cfg.batch_size * (args.steps + 2)
    speed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, args.input_scale):
            (Path(tmp) / str(scale)).mkdir()
            arrays = random_arrays(Path(tmp) / str(scale), n, size, scale)
            warm, rows = np.arange(cfg.batch_size * 2), np.arange(cfg.batch_size * 2, n)
            eyelip(cfg, arrays, warm)  # warm-up: allocator, oneDNN kernel choice
            speed[scale] = eyelip(cfg, arrays, rows)
    print(f"model {cfg.model}, {size} px masks, batch {cfg.batch_size}, {args.steps} steps")
    for scale, ips in speed.items():
        print(f"input scale {scale} ({size * scale} px photos): {ips:6.1f} img/s")
    print(f"speed at input scale {args.input_scale} / scale 1: {speed[args.input_scale] / speed[1]:.2f}x")


if __name__ == "__main__":
    main()
