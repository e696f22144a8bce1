"""Claim: a recipe change chosen on validation faces holds on the test folds at other training seeds.

Trains the recipe in params.yaml (apply a profile first) on every ``--folds`` fold of its k-fold
split, once per ``--seeds`` seed and ``--data`` folder, and scores each model on its fold's test
faces with the evaluate stage's own code. The ``--data`` folders are resized datasets that differ
only in what the resize stage made (e.g. ``resize.prior: facemesh`` against ``facemesh_flip``, each
folder's prior read from its meta.json); the first is the baseline. Prints each folder's 5-fold mean
test IoU (eyes and lips as one mask) per seed, and each folder's difference from the baseline fold
by fold at the same seed. No DVC, no MLflow; built for a GPU that many small runs share.

This reports test IoU, so it only measures how far the seed moves a change already chosen on
validation faces (benchmarks/screen_recipes.py); it must not pick recipes.

    eyelip profile mini --data-root ../shared/celebamask-hq-mini   # then, with resize.prior set to each:
    dvc repro resize && cp -r data/resized /tmp/flip                 # ... and /tmp/mesh
    python benchmarks/seed_spread.py --data /tmp/mesh --data /tmp/flip --seeds 1,2 --workers 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from eyelip.data.spec import DataSpec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from screen_recipes import assign, recipe_params, run_jobs, train_fold  # noqa: E402 (the screen's own training)


def train_and_test(job: dict[str, Any]) -> dict[str, Any]:
    """One seed on one fold of one data folder, scored on the fold's test faces; errors are returned."""
    key = {"data": job["data"], "seed": job["seed"], "fold": job["fold"]}
    try:
        from eyelip.data.fuse import FusedMasks
        from eyelip.evaluation.evaluate import TestSplit, evaluate
        from eyelip.inference.predictors import TorchPredictor

        with tempfile.TemporaryDirectory() as tmp:
            summary, ids, arrays, minutes = train_fold(job, Path(tmp))
            test = TestSplit(arrays, FusedMasks(job["fused"]), arrays.rows(ids["test"]))
            metrics = evaluate(TorchPredictor(Path(tmp) / "model.pt"), test.batches(32)).metrics
        curve = [row["val_iou"] for row in summary["history"]]
        return key | {
            "test_iou": metrics.get("iou_combined", metrics["iou"]),
            "test_iou_by_target": {t: metrics[f"iou_{t}"] for t in job["params"]["data"]["targets"]},
            "best_val_iou": max(curve),
            "minutes": round(minutes, 2),
            "img_s": summary["train_images_per_second"],
        }
    except Exception as exc:  # noqa: BLE001 - reported per run
        return key | {"error": repr(exc)}


def report(results: list[dict[str, Any]], folders: list[str]) -> None:
    scores = {(r["data"], r["seed"], r["fold"]): r["test_iou"] for r in results if "test_iou" in r}
    seeds, folds = sorted({s for _, s, _ in scores}), sorted({f for _, _, f in scores})
    print(
        "\ntest IoU (eyes and lips as one mask): each folder's mean over the folds, per seed; "
        "Δ = folder - baseline, fold by fold at the same seed"
    )
    for data in folders:
        for seed in seeds:
            row = [scores.get((data, seed, f)) for f in folds]
            if any(v is None for v in row):
                print(f"{data} seed {seed}: {sum(v is not None for v in row)}/{len(folds)} folds finished")
                continue
            line = f"{data} seed {seed}: " + " / ".join(f"{v:.4f}" for v in row) + f" = {statistics.mean(row):.4f}"
            base = [scores.get((folders[0], seed, f)) for f in folds]
            if data != folders[0] and all(v is not None for v in base):
                deltas = [v - b for v, b in zip(row, base)]
                line += "  Δ " + " / ".join(f"{d:+.4f}" for d in deltas) + f" = {statistics.mean(deltas):+.4f}"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="a resized folder (stage resize); repeat it, the first is the baseline",
    )
    parser.add_argument(
        "--fused", type=Path, default=ROOT / "data" / "fused", help="the fused folder (stage fuse-masks)"
    )
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (train.seed)")
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--workers", type=int, default=1, help="parallel runs (16 share one H200 at base width 16)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (0: all cores)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs (for a quick try)")
    parser.add_argument("--deadline", type=float, default=None, help="seconds; stop starting runs after it")
    parser.add_argument("--out", type=Path, default=Path("seed_spread.jsonl"), help="one JSON line per run, appended")
    args = parser.parse_args()

    jobs = []
    for seed in map(int, args.seeds.split(",")):  # seed-major: a stopped run still has whole seeds to compare
        for data in args.data:
            params = recipe_params({"train.seed": seed} | ({"train.epochs": args.epochs} if args.epochs else {}))
            assign(params, "resize.prior", DataSpec.read(data).prior)
            jobs += [
                {
                    "data": str(data),
                    "seed": seed,
                    "fold": fold,
                    "params": params,
                    "fused": str(args.fused),
                    "device": args.device,
                    "threads": args.threads,
                }
                for fold in map(int, args.folds.split(","))
            ]
    print(f"{len(jobs)} runs, {args.workers} at a time", flush=True)
    results = run_jobs(
        train_and_test,
        jobs,
        args.workers,
        args.deadline,
        args.out,
        lambda r: (
            f"{r['data']} seed {r['seed']} fold {r['fold']}: "
            + (
                f"ERROR {r['error']}"
                if "error" in r
                else f"test IoU {r['test_iou']:.4f}, best val {r['best_val_iou']:.4f} ({r['minutes']} min, {r['img_s']} img/s)"
            )
        ),
    )
    report(results, [str(d) for d in args.data])


if __name__ == "__main__":
    main()
