"""Claim: at equal wall-clock training time, on the same faces, eyelip's recipe beats the U-Net a user would
pick instead, a segmentation_models_pytorch U-Net trained by a plain, competent loop (benchmarks/peer_train.py).

Run from eyelip's root, inside `.venv`, on a clone of it OUTSIDE this repository whose params.yaml holds
the recipe and the data (e.g. `eyelip profile mini --data-root ../shared/celebamask-hq-mini`, then
`dvc repro split`): nothing the clone derives from licensed faces may come back here. In that clone,
one after the other on a machine left alone:

1. eyelip as configured (`dvc exp run -n peer-eyelip evaluate`): its training minutes set the budget;
2. the peer, for the budget of 1, in its own environment (``--peer-python``), on the faces of 1 (no eyelip
   code in its training path). Its test probabilities are scored by eyelip's own evaluation, as eyelip's are;
3. eyelip without the face-mesh prior (`-S resize.prior=none -S model.prior_gate=0`), same epochs.

With ``--folds 0,1,2,3,4`` (k-fold profiles such as ``mini``) it does 1-3 for each test fold in turn
(``-S split.fold=K``), so every method sees the same faces per fold; ``--skip-no-prior`` leaves 3 out.
Each run starts from the clone's own params.yaml (`dvc exp run` leaves a run's params in the workspace),
which is put back at the end.

Prints one Markdown table: test IoU of eyes and lips as one mask at the mask size and at the native
mask resolution, per target, training time, epochs and images per second, and the CPU; with several
folds, a row per fold and method, then each method's mean ± std over the folds.

The peer's environment (torch with torchvision, which smp needs; CPU or CUDA build):
    python -m venv .venv-peer && .venv-peer/bin/pip install torch torchvision 'segmentation-models-pytorch==0.6.*'

    python benchmarks/peer.py --project ../eyelip-mini --peer-python .venv-peer/bin/python [--encoder resnet18]
        [--folds 0,1,2,3,4] [--skip-no-prior]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from eyelip.evaluation.evaluate import TestSplit, evaluate
from eyelip.tracking import environment
from eyelip.tracking.results import mean_std

HERE = Path(__file__).resolve().parent
KEYS = ("iou_combined", "iou_eyes", "iou_lips", "iou_native_combined", "iou_native_eyes", "iou_native_lips")


class StoredProbs:
    """A Predictor (eyelip.inference.predictors) that replays the peer's test probabilities in test.txt order."""

    def __init__(self, probs: np.ndarray, targets: list[str]) -> None:
        self.probs, self.targets, self.size, self.at = probs, targets, probs.shape[-1], 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = self.probs[self.at : self.at + len(images)]
        self.at += len(images)
        return out


def eyelip_run(project: Path, params: str, method: str, name: str, *sets: str) -> dict[str, object]:
    """One `dvc exp run` of the clone's own ``params`` text with ``sets`` on top (an earlier run's sets
    would otherwise stay in the workspace's params.yaml)."""
    (project / "params.yaml").write_text(params)
    subprocess.run(
        ["dvc", "exp", "run", "-n", name, *(a for s in sets for a in ("-S", s)), "evaluate"], cwd=project, check=True
    )
    train = json.loads((project / "metrics/train.json").read_text())
    scores = json.loads((project / "metrics/evaluate.json").read_text())
    history = (project / "metrics/train_history.csv").read_text().splitlines()
    env = environment.read((project / "metrics/environment.json").read_text())
    return {
        "method": method,
        "cpu": environment.cpu_label(env),
        "train_seconds": train["train_minutes"] * 60,
        "epochs": len(history) - 1,
        "images_per_second": train["train_images_per_second"],
        **{k: scores[k] for k in KEYS},
    }


def peer_env(summary: dict[str, object]) -> dict[str, str]:
    """The peer's run as ``env.*`` tags (what eyelip records in metrics/environment.json) for ``cpu_label``:
    the kernels and bf16 its torch reported; the CPU and the oneDNN cap are this process's, which it inherited."""
    return {
        environment.PREFIX + "cpu": environment.cpu_info()[0],
        environment.PREFIX + "cpu_capability": str(summary["cpu_capability"]),
        environment.PREFIX + "cpu_bf16": str(summary["bf16"]),
        environment.PREFIX + "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
        environment.PREFIX + "threads": str(summary["threads"]),
    }


def peer_run(project: Path, python: str, budget: float, encoder: str, weights: str | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as out:
        command = [python, str(HERE / "peer_train.py"), "--project", str(project), "--budget", str(budget)]
        command += ["--out", out, "--encoder", encoder] + (["--encoder-weights", weights] if weights else [])
        subprocess.run(command, check=True)
        summary = json.loads((Path(out) / "history.json").read_text())
        probs = np.load(Path(out) / "probs.npy")
    split = TestSplit.open(project / "data/resized", project / "data/fused", project / "data/split")
    scores = evaluate(StoredProbs(probs, list(split.spec.targets)), split.batches(32)).metrics
    return {
        "method": f"smp U-Net {encoder} ({weights or 'from scratch'}, {summary['size']} px, torch {summary['torch']})",
        "cpu": environment.cpu_label(peer_env(summary)),
        "train_seconds": summary["train_seconds"],
        "epochs": summary["epochs"],
        "images_per_second": round(summary["images_per_second"], 1),
        **{k: scores[k] for k in KEYS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--project", type=Path, required=True, help="a clone outside this repository, run through split"
    )
    parser.add_argument("--peer-python", required=True, help="python of an environment with torch and smp")
    parser.add_argument(
        "--encoder", default="resnet18", help="smp encoder (default: the fastest of its usual ones on CPU)"
    )
    parser.add_argument("--encoder-weights", default=None, help="e.g. imagenet, where weights can be downloaded")
    parser.add_argument(
        "--folds", help="test folds to race on, one after the other, e.g. 0,1,2,3,4 (default: the project's split.fold)"
    )
    parser.add_argument("--skip-no-prior", action="store_true", help="leave out eyelip without the prior (step 2)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    project = args.project.resolve()
    if project == HERE.parent or HERE.parent in project.parents:
        sys.exit(
            f"--project {args.project}: must be a clone outside this repository (its outputs derive from the data)"
        )
    folds = [int(k) for k in args.folds.split(",")] if args.folds else [None]
    params = (project / "params.yaml").read_text()
    rows: list[dict[str, object]] = []

    def add(fold: int | None, row: dict[str, object]) -> None:
        rows.append({"fold": fold, **row})
        if args.json:  # after every run: an interrupted race keeps the rows it finished
            args.json.write_text(json.dumps({"rows": rows}, indent=1))

    try:
        for fold in folds:
            tag, sets = ("", ()) if fold is None else (f"-f{fold}", (f"split.fold={fold}",))
            eyelip = eyelip_run(project, params, "eyelip", "peer-eyelip" + tag, *sets)
            add(fold, eyelip)
            # The workspace's data is now that run's: the peer trains and is scored on the same faces.
            budget = float(eyelip["train_seconds"])
            add(fold, peer_run(project, args.peer_python, budget, args.encoder, args.encoder_weights))
            if not args.skip_no_prior:
                no_prior = (*sets, "resize.prior=none", "model.prior_gate=0")
                name = "peer-eyelip-noprior" + tag
                add(fold, eyelip_run(project, params, "eyelip without the prior", name, *no_prior))
    finally:
        (project / "params.yaml").write_text(params)
    # Each run's CPU as its process ran it (the kernels torch dispatched to, capped by ATEN_CPU_CAPABILITY and
    # ONEDNN_MAX_CPU_ISA; bf16; threads), not the flags /proc/cpuinfo lists.
    for label in dict.fromkeys(r["cpu"] for r in rows):
        print(f"\nCPU: {label}, {os.cpu_count()} cores")
    print(f"test faces: {project / 'data/split/test.txt'}")
    scores = ["test IoU (one mask)", "eyes", "lips", "native: one mask", "eyes", "lips"]
    print(
        markdown(
            ["method", "fold", "train min", "epochs", "img/s", *scores],
            [
                [r["method"], "–" if r["fold"] is None else r["fold"], f"{r['train_seconds'] / 60:.1f}", r["epochs"]]
                + [r["images_per_second"], *(f"{r[k]:.4f}" for k in KEYS)]
                for r in rows
            ],
        )
    )
    if len(folds) > 1:
        print(f"\nMean ± std over folds {args.folds}:")
        methods = {r["method"]: [m for m in rows if m["method"] == r["method"]] for r in rows}
        print(
            markdown(
                ["method", "train min", *scores],
                [
                    [method, mean_std([r["train_seconds"] / 60 for r in runs], 1)]
                    + [mean_std([r[k] for r in runs], 3) for k in KEYS]
                    for method, runs in methods.items()
                ],
            )
        )


def markdown(header: list[str], rows: list[list[object]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


if __name__ == "__main__":
    main()
