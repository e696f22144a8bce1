"""Claim: depthwise-separable blocks (`model.block: depthwise`) cut a U-Net's multiply-adds about
8x, but not its training time on a CPU: at base width 24 they train no faster than the plain
width-16 U-Net, so they buy no width for the same minutes.

Times eyelip's `Trainer` on the same random batches with params.yaml's `model` (the baseline) and
with the `--set` changes, in this process, alternating twice and keeping each one's faster pass,
and prints the ratio.

    python benchmarks/model_variant.py [--steps 20] [--set model.block=depthwise model.base_width=24]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import yaml
from train_throughput import eyelip, random_arrays

from eyelip.model.unet import build_model
from eyelip.params import whole as P
from eyelip.params.model import ModelParams
from eyelip.training.loop import TrainConfig


def variant(cfg: TrainConfig, changes: list[str]) -> TrainConfig:
    model = cfg.model.model_dump()
    for change in changes:
        key, sep, value = change.partition("=")
        if not sep or not key.startswith("model."):
            raise SystemExit(f"--set {change!r}: expected model.KEY=VALUE")
        model[key.removeprefix("model.")] = yaml.safe_load(value)
    return cfg.model_copy(update={"model": ModelParams.model_validate(model)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--set",
        nargs="+",
        default=["model.block=depthwise", "model.base_width=24"],
        metavar="model.KEY=VALUE",
        help="changes to params.yaml's model section",
    )
    args = parser.parse_args()
    params = P.load()
    base = TrainConfig.from_params(params)
    configs = {"baseline": base, "variant": variant(base, args.set)}
    size = params.resize.size
    n = base.batch_size * (args.steps + 2)
    speed: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        arrays = random_arrays(Path(tmp), n, size)
        warm, rows = np.arange(base.batch_size * 2), np.arange(base.batch_size * 2, n)
        for _ in range(2):  # alternate, so that a slow spell of the machine hits both
            for name, cfg in configs.items():
                eyelip(cfg, arrays, warm)  # warm-up: allocator, oneDNN kernel choice
                speed[name] = max(speed.get(name, 0.0), eyelip(cfg, arrays, rows))
    print(f"{size} px, batch {base.batch_size}, {args.steps} steps")
    for name, cfg in configs.items():
        n_params = sum(p.numel() for p in build_model(cfg.model, out_channels=1).parameters())
        print(f"{name}: model {cfg.model} ({n_params / 1e6:.2f}M params): {speed[name]:6.1f} img/s")
    print(f"variant / baseline training speed: {speed['variant'] / speed['baseline']:.2f}x")


if __name__ == "__main__":
    main()
