"""The peer in benchmarks/peer.py: a segmentation_models_pytorch U-Net trained by a plain, competent loop.

Runs in its own environment (numpy, torch, segmentation-models-pytorch; no eyelip code), on the
arrays of an eyelip project whose pipeline ran through `split`: the photos of
`data/resized/images.npy` (RGB channels only, resized to ``--size``), the masks of
`data/resized/masks.npy` (or `train_masks.npy` when ``--size`` is the training-mask size), and the
faces listed in `data/split/{train,val,test}.txt`. So it sees exactly the faces eyelip sees.

The loop: AdamW, BCE + Dice (smp's own loss), horizontal flips and colour jitter, bf16 autocast
where the CPU runs it natively (as eyelip does), a cosine schedule planned to fit ``--budget``
seconds (the first epoch is timed, then the number of epochs is fixed), the epoch with the best
validation IoU kept. It writes the test faces' probabilities at the mask size (``probs.npy``,
rows in test.txt order) and ``history.json`` to ``--out``.

    python benchmarks/peer_train.py --project DIR --budget SECONDS --out DIR [--encoder resnet18]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # ImageNet statistics, as smp's encoders expect
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def rows(project: Path, name: str, ids: dict[int, int]) -> np.ndarray:
    return np.array([ids[int(i)] for i in (project / "data/split" / f"{name}.txt").read_text().split()])


def load(project: Path, size: int) -> tuple[torch.Tensor, torch.Tensor, int, dict[str, np.ndarray]]:
    """Photos (N, 3, size, size) normalised, masks (N, C, size, size) float, the scored mask size, split rows."""
    resized = project / "data/resized"
    meta = json.loads((resized / "meta.json").read_text())
    images = torch.from_numpy(np.load(resized / "images.npy")[..., :3]).permute(0, 3, 1, 2).float() / 255
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="area")
    masks_file = "masks.npy" if size == meta["size"] else "train_masks.npy"
    masks = torch.from_numpy(np.load(resized / masks_file)).float()
    if masks.shape[-1] != size:
        raise SystemExit(f"--size {size}: masks are {meta['size']} px (and {meta.get('train_size')} px for training)")
    ids = {int(i): r for r, i in enumerate((resized / "ids.txt").read_text().split())}
    split = {name: rows(project, name, ids) for name in ("train", "val", "test")}
    return (images - MEAN) / STD, masks, meta["size"], split


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    flip = torch.rand(len(x), generator=gen) < 0.5
    x, y = x.clone(), y.clone()
    x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)  # eyes and lips are each one mirror-symmetric channel
    gain = 1 + 0.2 * (2 * torch.rand(len(x), 1, 1, 1, generator=gen) - 1)
    shift = 0.2 * (2 * torch.rand(len(x), 1, 1, 1, generator=gen) - 1)
    return x * gain + shift, y


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, out_size: int, autocast: torch.autocast) -> torch.Tensor:
    model.eval()
    probs = []
    for batch in x.split(32):
        with autocast:
            logits = model(batch.contiguous(memory_format=torch.channels_last)).float()
        p = torch.sigmoid(logits)
        probs.append(F.avg_pool2d(p, p.shape[-1] // out_size) if p.shape[-1] != out_size else p)
    return torch.cat(probs)


def pooled_iou(probs: torch.Tensor, masks: torch.Tensor) -> float:
    """IoU of all channels merged into one mask, pooled over the faces (eyelip's headline rule)."""
    pred, truth = probs.amax(1) >= 0.5, masks.amax(1) > 0.5
    return ((pred & truth).sum() / (pred | truth).sum().clamp(min=1)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--budget", type=float, required=True, help="training seconds (validation included)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--encoder-weights", default=None, help="e.g. imagenet, where weights can be downloaded")
    parser.add_argument("--size", type=int, default=128, help="training and prediction size in px")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    images, masks, out_size, split = load(args.project, args.size)
    tr, va, te = split["train"], split["val"], split["test"]
    val_masks = masks[va] if masks.shape[-1] == out_size else F.avg_pool2d(masks[va], masks.shape[-1] // out_size)
    model = smp.Unet(args.encoder, encoder_weights=args.encoder_weights, in_channels=3, classes=masks.shape[1])
    model = model.to(memory_format=torch.channels_last)
    dice, bce = smp.losses.DiceLoss("multilabel", from_logits=True), torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16)
    gen = torch.Generator().manual_seed(args.seed)
    steps = math.ceil(len(tr) / args.batch_size)
    planned, history, best = None, [], (-1.0, 0, None)
    start = time.perf_counter()
    epoch = 0
    while True:
        epoch += 1
        tic = time.perf_counter()
        model.train()
        order = tr[torch.randperm(len(tr), generator=gen).numpy()]
        total = 0.0
        for step in range(steps):
            if planned is None:  # the first epoch: linear warm-up
                lr = args.lr * (step + 1) / steps
            else:  # cosine from the second epoch to the planned last one
                lr = args.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 2 + step / steps) / max(1, planned - 1)))
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = order[step * args.batch_size : (step + 1) * args.batch_size]
            x, y = augment(images[batch], masks[batch], gen)
            with autocast:
                logits = model(x.contiguous(memory_format=torch.channels_last)).float()
            loss = bce(logits, y) + dice(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        val_iou = pooled_iou(predict(model, images[va], out_size, autocast), val_masks)
        seconds = time.perf_counter() - tic
        if planned is None:  # fix the schedule once one epoch's cost is known
            planned = max(1, int(args.budget // seconds))
        history.append({"epoch": epoch, "train_loss": total / len(tr), "val_iou": val_iou, "seconds": seconds})
        print(f"epoch {epoch}/{planned} loss {total / len(tr):.4f} val IoU {val_iou:.4f} ({seconds:.1f} s)", flush=True)
        if val_iou > best[0]:
            best = (val_iou, epoch, {k: v.clone() for k, v in model.state_dict().items()})
        if epoch >= planned or time.perf_counter() - start + seconds > args.budget:
            break
    train_seconds = time.perf_counter() - start
    model.load_state_dict(best[2])
    probs = predict(model, images[te], out_size, autocast)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "probs.npy", probs.numpy().astype(np.float32))
    summary = {
        "encoder": args.encoder,
        "encoder_weights": args.encoder_weights,
        "size": args.size,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "epochs": epoch,
        "best_epoch": best[1],
        "best_val_iou": best[0],
        "train_seconds": train_seconds,
        "images_per_second": epoch * len(tr) / train_seconds,
        "bf16": native_bf16,
        "torch": torch.__version__,
        # what torch ran on (capped by ATEN_CPU_CAPABILITY): peer.py names the CPU from it
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "smp": smp.__version__,
        "history": history,
    }
    (args.out / "history.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
