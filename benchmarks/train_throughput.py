"""Claim: eyelip's training step is faster than a plain eager PyTorch loop of the same model.

Both loops train the default model (params.yaml `model`) on the same batches for the same number
of steps, in this process, one after the other: the baseline is fp32, NCHW, with the same loss and
optimizer; eyelip's `Trainer` adds channels-last memory format and bf16 autocast where the CPU
runs it natively (AVX512-BF16/AMX), plus its augmentation on the fly.

    python benchmarks/train_throughput.py [--steps 20] [--batch-size 16] [--size 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from eyelip.data.arrays import ids_text
from eyelip.data.dataset import ResizedArrays
from eyelip.data.spec import DataSpec
from eyelip.model.losses import build_loss
from eyelip.model.unet import build_model
from eyelip.params import whole as P
from eyelip.training.loop import TrainConfig, Trainer, autocast_dtype, pick_device


def random_arrays(directory: Path, n: int, size: int, input_scale: int = 1, train_scale: int = 1) -> ResizedArrays:
    """A resized-stage output of random face-sized images with sparse (~1.6%) masks (and training
    masks at ``train_scale`` times the size when that is > 1)."""
    rng = np.random.default_rng(0)
    side = size * input_scale
    np.save(directory / "images.npy", rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8))
    np.save(directory / "masks.npy", (rng.random((n, 1, size, size)) < 0.016).astype(np.uint8))
    if train_scale > 1:
        fine = size * train_scale
        np.save(directory / "train_masks.npy", (rng.random((n, 1, fine, fine)) < 0.016).astype(np.uint8))
    (directory / "ids.txt").write_text(ids_text(list(range(n))))
    DataSpec(
        {"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}, size, input_scale=input_scale, train_scale=train_scale
    ).write(directory)
    return ResizedArrays(directory)


def baseline(cfg: TrainConfig, arrays: ResizedArrays, rows: np.ndarray) -> float:
    torch.manual_seed(0)
    device = pick_device(cfg.device)
    model = build_model(cfg.model, out_channels=len(arrays.spec.channels)).to(device)
    criterion = build_loss(cfg.loss).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    tic = time.perf_counter()
    for x, y in arrays.batches(rows, cfg.batch_size):
        loss, _ = criterion(model(x.to(device)), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss.detach().item()  # waits for the GPU's queued work
    return len(rows) / (time.perf_counter() - tic)


def eyelip(cfg: TrainConfig, arrays: ResizedArrays, rows: np.ndarray) -> float:
    trainer = Trainer(cfg, arrays, rows, rows[:1], arrays.spec.channels)
    trainer.steps_per_epoch = len(rows) // cfg.batch_size
    tic = time.perf_counter()
    trainer.train_epoch(1)  # ends with a sync: its metrics are read back from the device
    return len(rows) / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None, help="default: params.yaml train.batch_size")
    parser.add_argument("--size", type=int, default=None, help="default: params.yaml resize.size")
    args = parser.parse_args()
    params = P.load()
    cfg = TrainConfig.from_params(params)
    cfg.batch_size = args.batch_size or cfg.batch_size
    size = args.size or params.resize.size
    with tempfile.TemporaryDirectory() as tmp:
        arrays = random_arrays(Path(tmp), cfg.batch_size * (args.steps + 2), size)
        warm = np.arange(cfg.batch_size * 2)
        rows = np.arange(cfg.batch_size * 2, len(arrays.images))
        baseline(cfg, arrays, warm), eyelip(cfg, arrays, warm)  # warm-up: allocator, oneDNN kernel choice
        base, ours = baseline(cfg, arrays, rows), eyelip(cfg, arrays, rows)
    dtype = autocast_dtype(cfg.precision, pick_device(cfg.device))
    print(
        f"model {cfg.model}, {size} px, batch {cfg.batch_size}, {args.steps} steps, "
        f"{torch.get_num_threads()} threads, autocast {dtype or 'off (fp32)'}"
    )
    print(f"plain eager fp32 loop: {base:6.1f} img/s")
    print(f"eyelip Trainer:        {ours:6.1f} img/s")
    print(f"speed-up: {ours / base:.2f}x")


if __name__ == "__main__":
    main()
