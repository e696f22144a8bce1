"""Claim (measured, not yet met): how much of a training epoch's time depends on the CPU's instruction set,
so that an AVX2-only CPU (many laptops and cloud VMs) can be judged from an AVX512 one.

Times eyelip's `Trainer` (one epoch of training with its augmentation, then validation, as the
train stage runs them) on a project's own arrays and params, in fresh processes that cap PyTorch's
and oneDNN's instruction sets before torch loads (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``):

- ``native``: what this CPU offers (bf16 autocast where it has AVX512-BF16 or AMX: ``train.precision: auto``);
- ``native-fp32``: the same CPU in fp32, to separate the instruction set from the bf16 autocast;
- ``avx2``: capped to AVX2, as an AVX2-only CPU runs it (``auto`` then means fp32);
- ``avx2-compile``: the same with ``runtime.compile: true`` (compilation excluded: first epoch dropped).

Each row: median seconds per epoch over ``--epochs`` after one warm-up epoch, and its ratio to
``native``; and the arithmetic rate that time implies: the floating-point operations of an epoch (its
training steps and validation, counted by ``torch.utils.flop_counter`` over the warm-up epoch) per
second. A rate near the CPU's peak says the epoch is compute-bound: only fewer operations make it
faster, not other kernels. Run from a project run through `split`, e.g. a clone with the `mini` profile
OUTSIDE this repository (its arrays derive from licensed faces), with nothing else running:

    python benchmarks/cpu_isa.py --project ../eyelip-mini [--epochs 3] [--rows native,avx2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROWS = {
    "native": ({}, {}),
    "native-fp32": ({}, {"precision": "fp32"}),
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, {}),
    "avx2-compile": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, {"compile": True}),
}


def worker(epochs: int, overrides: dict[str, object]) -> None:
    """One row, in this process: prints a JSON line with each epoch's seconds."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from eyelip.data.dataset import ResizedArrays, split_rows
    from eyelip.params import whole as P
    from eyelip.training.loop import TrainConfig, build_trainer

    cfg = TrainConfig.from_params(P.load())
    if "precision" in overrides:
        cfg = cfg.model_copy(update={"precision": overrides["precision"]})
    if "compile" in overrides:
        cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"compile": True})})
    arrays = ResizedArrays("data/resized")
    train, val = split_rows(arrays, "data/split", "train"), split_rows(arrays, "data/split", "val")
    _, trainer = build_trainer(cfg, arrays, train, val)
    seconds, flops = [], 0
    for epoch in range(1, epochs + 2):
        # The warm-up epoch also counts the operations (compiled graphs hide them from the counter).
        counting = epoch == 1 and "compile" not in overrides
        counter = FlopCounterMode(display=False) if counting else nullcontext()
        tic = time.perf_counter()
        with counter:
            trainer.train_epoch(epoch)
            trainer.evaluate(val)
        seconds.append(time.perf_counter() - tic)
        if counting:
            flops = counter.get_total_flops()
    dtype = trainer.autocast.fast_dtype if trainer.autocast._enabled else torch.float32
    capability = torch.backends.cpu.get_cpu_capability()
    print(json.dumps({"seconds": seconds, "capability": capability, "dtype": str(dtype), "flops": flops}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=Path("."), help="a project run through split")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per row, after one warm-up epoch")
    parser.add_argument("--rows", default="native,native-fp32,avx2", help=f"some of {','.join(ROWS)}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.chdir(args.project)
    if args.worker:
        return worker(args.epochs, ROWS[args.worker][1])
    from eyelip.params import whole as P
    from eyelip.tracking.environment import cpu_info

    model, flags = cpu_info()
    epochs = P.load().train.epochs
    print(f"CPU: {model}, {os.cpu_count()} cores, flags: {' '.join(flags)}; train.epochs {epochs}")
    print("| row | capability | autocast | s/epoch | ratio to native | est. min for train.epochs | GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for name in args.rows.split(","):
        env = {**os.environ, **ROWS[name][0]}
        command = [sys.executable, __file__, "--worker", name, "--epochs", str(args.epochs)]
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        median = statistics.median(result["seconds"][1:])
        base = base or median
        rate = f"{result['flops'] / median / 1e9:.0f}" if result["flops"] else "–"
        print(
            f"| {name} | {result['capability']} | {result['dtype']} | {median:.1f} | {median / base:.2f}x "
            f"| {median * epochs / 60:.1f} | {rate} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
