"""Claim: a recipe change helps, measured as validation IoU against the base recipe on the same folds.

A screen before the tracked k-fold sweep, for one GPU (many of these small runs share it) or a CPU
(``--workers 1``). The base recipe is params.yaml (with a profile applied) + ``--set``; each
``--variant`` changes some keys of it. Every recipe trains on each ``--folds`` fold of its k-fold
split (``split.folds``) and is scored on that fold's validation faces only, never on its test
fold: the mean val IoU of the last 20 epochs (steadier than the best epoch on a few dozen faces).
No DVC, no MLflow. Prints each variant's score per fold and its difference from the base on the
same folds.

    eyelip profile mini --data-root ../shared/celebamask-hq-mini && dvc repro resize
    python benchmarks/screen_recipes.py --set split.val=0.1 --folds 0,1 --workers 12 \\
        --variant drop2:model.dropout=0.2 --variant wd05:train.weight_decay=0.05 --out screen.jsonl

Values are YAML (``--set train.loss.bce=1.0``). The screen needs validation faces: the ``mini``
profile holds out 40 per fold (``split.val: 0.1``); the example's ``--set split.val=0.1`` keeps them
for a base recipe that trains on all of them (``split.val: 0``). To tell a small gain from the
seed's noise, add seeds as variants (``--variant seed1:train.seed=1``) and compare like with like.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TAIL = 20  # epochs averaged for the score


def assign(params: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def parse_sets(items: list[str]) -> dict[str, Any]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {item!r}")
        pairs[key] = yaml.safe_load(value)
    return pairs


def recipe_params(overrides: dict[str, Any]) -> dict[str, Any]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in overrides.items():
        assign(params, key, value)
    return params


def train_fold(job: dict[str, Any], model_dir: Path) -> tuple[dict[str, Any], dict[str, list[int]], Any, float]:
    """Trains ``job["params"]`` on fold ``job["fold"]`` of ``job["data"]`` into ``model_dir/model.pt``,
    silently (no DVC, no MLflow); returns fit's summary, the fold's ids by split, the arrays and the
    minutes it took."""
    from eyelip.data.dataset import ResizedArrays
    from eyelip.data.split import fold_split
    from eyelip.params import whole
    from eyelip.training.loop import TrainConfig, fit

    params = copy.deepcopy(job["params"])
    assign(params, "runtime.threads", job["threads"])
    assign(params, "runtime.device", job["device"])
    cfg = TrainConfig.from_params(whole.parse(params))
    arrays = ResizedArrays(job["data"])
    split = params["split"]
    ids = fold_split(arrays.ids, split["folds"], job["fold"], split["val"], split["seed"])
    if not ids["val"]:
        raise ValueError("no validation faces: add --set split.val=0.1")
    tic = time.perf_counter()
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        summary = fit(
            cfg,
            arrays,
            arrays.rows(ids["train"]),
            arrays.rows(ids["val"]),
            model_dir / "model.pt",
            model_dir / "resume.pt",
            "screen",
        )
    return summary, ids, arrays, (time.perf_counter() - tic) / 60


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """One recipe on one fold, scored on its validation faces; an error is returned, so one bad
    recipe does not stop the screen."""
    try:
        from eyelip.training.loop import pick_device

        with tempfile.TemporaryDirectory() as tmp:
            summary, _, _, minutes = train_fold(job, Path(tmp))
        curve = [row["val_iou"] for row in summary["history"]]
        return {
            "recipe": job["recipe"],
            "fold": job["fold"],
            "score": statistics.mean(curve[-TAIL:]),
            "best_val_iou": max(curve),
            "best_epoch": curve.index(max(curve)) + 1,
            "img_s": summary["train_images_per_second"],
            "minutes": round(minutes, 2),
            "device": pick_device(job["device"]).type,
            "val_iou": [round(v, 4) for v in curve],
        }
    except Exception as exc:  # noqa: BLE001 - reported per run
        return {"recipe": job["recipe"], "fold": job["fold"], "error": repr(exc)}


def run_jobs(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    jobs: list[dict[str, Any]],
    workers: int,
    deadline: float | None,
    out: Path,
    describe: Callable[[dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """``fn`` on each job, ``workers`` at a time in spawned processes (CUDA-safe); each result is
    appended to ``out`` as one JSON line as soon as it is in, so a run stopped at ``deadline``
    seconds (the runs still going are ended) keeps what finished."""
    start, results = time.monotonic(), []
    with mp.get_context("spawn").Pool(workers) as pool, open(out, "a") as log:
        pending = pool.imap_unordered(fn, jobs)
        for _ in jobs:
            left = None if deadline is None else deadline - (time.monotonic() - start)
            try:
                result = pending.next(timeout=left) if left is None or left > 0 else None
            except mp.TimeoutError:
                result = None
            if result is None:
                print("deadline reached: stopping the runs still going")
                pool.terminate()
                break
            results.append(result)
            log.write(json.dumps(result) + "\n")
            log.flush()
            print(f"{time.monotonic() - start:6.0f}s " + describe(result), flush=True)
    return results


def report(results: list[dict[str, Any]], names: list[str]) -> None:
    scores = {(r["recipe"], r["fold"]): r["score"] for r in results if "score" in r}
    folds = sorted({fold for _, fold in scores})
    print(f"\nmean val IoU of the last {TAIL} epochs, by fold; Δ = variant - base on the folds both finished")
    print(f"{'recipe':12s} " + " ".join(f"fold {f:<3d}" for f in folds) + "    mean        Δ")
    for name in names:
        row = [scores.get((name, f)) for f in folds]
        done = [f for f in folds if (name, f) in scores and ("base", f) in scores]
        delta = (
            statistics.mean(scores[(name, f)] - scores[("base", f)] for f in done) if done and name != "base" else None
        )
        mean = statistics.mean(v for v in row if v is not None) if any(v is not None for v in row) else None
        print(
            f"{name:12s} "
            + " ".join(f"{v:8.4f}" if v is not None else "       –" for v in row)
            + (f"  {mean:.4f}" if mean is not None else "       –")
            + (f"  {delta:+.4f}" if delta is not None else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "resized", help="a resized folder (stage resize)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="changes to the base recipe")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]")
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--workers", type=int, default=1, help="parallel runs (a GPU holds ~12 at base width 16)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (0: all cores)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--deadline", type=float, default=None, help="seconds; stop starting runs after it")
    parser.add_argument("--out", type=Path, default=Path("screen.jsonl"), help="one JSON line per run, appended")
    args = parser.parse_args()

    base = parse_sets(args.set)
    recipes = {"base": recipe_params(base)}
    for spec in args.variant:
        name, sep, sets = spec.partition(":")
        if not sep or name == "base":
            raise SystemExit(f"--variant: expected NAME:KEY=VALUE[,KEY=VALUE] (NAME not 'base'), got {spec!r}")
        recipes[name] = recipe_params({**base, **parse_sets(sets.split(","))})
    # Fold-major: a screen stopped early still compares every recipe on the folds it finished.
    jobs = [
        {
            "recipe": name,
            "fold": fold,
            "params": params,
            "data": str(args.data),
            "device": args.device,
            "threads": args.threads,
        }
        for fold in map(int, args.folds.split(","))
        for name, params in recipes.items()
    ]
    print(f"{len(recipes)} recipes x {len(jobs) // len(recipes)} folds, {args.workers} at a time", flush=True)
    results = run_jobs(
        train_one,
        jobs,
        args.workers,
        args.deadline,
        args.out,
        lambda r: (
            f"{r['recipe']:12s} fold {r['fold']}: "
            + (
                f"ERROR {r['error']}"
                if "error" in r
                else f"score {r['score']:.4f}, best {r['best_val_iou']:.4f} at epoch {r['best_epoch']} "
                f"({r['img_s']} img/s on {r['device']})"
            )
        ),
    )
    report(results, list(recipes))


if __name__ == "__main__":
    main()
