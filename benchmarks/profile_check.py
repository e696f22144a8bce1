"""Check: a profile trains end to end at the speed it promises, on a machine without DVC or MLflow.

For a bare GPU box (issue 6's check of the full-data profile): in a scratch folder, the stage
scripts generate the built-in synthetic sample (enough faces for the profile's split), apply
``profiles/<NAME>.yaml`` to params.yaml as `eyelip profile` does, then fuse, resize and split;
``eyelip.training.loop.fit`` trains for ``--epochs`` (no tracking) and prints images/s and val IoU. The
baseline, measured in the same run on the same batches, is a plain eager fp32 PyTorch loop of the
same model; the ratio is eyelip's Trainer (channels-last, bf16 autocast where native) against it.

    python benchmarks/profile_check.py celebamask-hq --epochs 3 [--samples 10000] [--work DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from eyelip.data.dataset import ResizedArrays, split_rows
from eyelip.params import whole as P
from eyelip.profiles import apply_profile
from eyelip.training.loop import TrainConfig, autocast_dtype, fit, pick_device

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from train_throughput import baseline, eyelip  # noqa: E402 (the same two loops as that benchmark)


def stage(name: str, work: Path) -> None:
    tic = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "pipeline" / f"{name}.py")], cwd=work, check=True)
    print(f"  {name}: {time.perf_counter() - tic:.0f}s", flush=True)


def prepare(profile: str, samples: int, work: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sample"]["n"] = samples
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage("sample", work)
    for line in apply_profile(profile, work / "data" / "sample.zip", work / "params.yaml", ROOT / "profiles"):
        print(f"  profile: {line}")
    for name in ("fuse_masks", "resize", "split"):
        stage(name, work)
    return P.load(work / "params.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", help="a name in profiles/, e.g. celebamask-hq")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=10000, help="synthetic faces (>= the profile's split)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        params = prepare(args.profile, args.samples, work)
        cfg = TrainConfig.from_params(params)
        cfg.epochs = args.epochs
        arrays = ResizedArrays(work / "data" / "resized")
        train_rows, val_rows = (split_rows(arrays, work / "data" / "split", s) for s in ("train", "val"))
        device = pick_device(cfg.device)
        print(
            f"{args.profile}: model {cfg.model}, {len(train_rows)} train / {len(val_rows)} val faces, "
            f"batch {cfg.batch_size}, {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
            f"autocast {autocast_dtype(cfg.precision, device) or 'off (fp32)'}",
            flush=True,
        )
        summary = fit(cfg, arrays, train_rows, val_rows, work / "model.pt", work / "resume.pt", "check")
        rows = train_rows[: cfg.batch_size * 100]  # 100 steps of each loop, after a warm-up of each
        baseline(cfg, arrays, rows[: cfg.batch_size * 5]), eyelip(cfg, arrays, rows[: cfg.batch_size * 5])
        base, ours = baseline(cfg, arrays, rows), eyelip(cfg, arrays, rows)
    print(
        f"fit: {summary['train_images_per_second']} img/s over {args.epochs} epochs (augmentation included), "
        f"{summary['train_minutes']} min; val IoU by epoch: "
        + ", ".join(f"{r['val_iou']:.3f}" for r in summary["history"])
    )
    print(f"plain eager fp32 loop: {base:7.1f} img/s")
    print(f"eyelip Trainer:        {ours:7.1f} img/s")
    print(f"speed-up: {ours / base:.2f}x")


if __name__ == "__main__":
    main()
