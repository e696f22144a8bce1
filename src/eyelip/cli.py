"""The ``eyelip`` command: use a trained model outside the pipeline, report on a run, browse runs.

Each sub-command lives in the module that implements it; this file wires arguments, plus ``ui``,
a thin launcher of the MLflow server.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from eyelip.errors import EyelipError
from eyelip.tracking.report import TOLERANCE

DESCRIPTION = """\
eyelip segments the eyes and lips in face photos. Train with `dvc repro` (see README.md);
predict and evaluate use the exported model without the training stack; report and ui look
at runs."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eyelip", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    predict = commands.add_parser(
        "predict",
        help="write mask and overlay PNGs for face photos",
        description="For each photo (any size), write NAME_mask.png at the photo's own resolution "
        "(255 = inside; NAME_TARGET_mask.png per target when the model has several) and "
        "NAME_overlay.png (prediction tinted on the photo). Uses the exported ONNX model with "
        "onnxruntime only, so predicting needs no training stack.",
    )
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images")
    predict.add_argument("--model", default="models/model.onnx", help="exported model (default: %(default)s)")
    predict.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    predict.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default: %(default)s)")
    predict.add_argument("--batch-size", type=int, default=16, help="images per batch (default: %(default)s)")
    predict.add_argument(
        "--no-overlay",
        dest="overlays",
        action="store_false",
        help="write the masks only: about 3x as fast on 1024 px JPEGs (no overlay PNG, only a reduced-scale decode)",
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="score a model on a CelebAMask-HQ-layout folder or zip",
        description="Evaluate an exported model on any CelebAMask-HQ-layout folder or zip with the pipeline's "
        "own preprocessing (targets and size from the model's metadata) and the same IoU "
        "implementation as the evaluate stage. Prints a table; --json writes iou (pooled at the "
        "model's output size, the reference notebook's protocol), iou_native (at the source mask resolution), "
        "per-target IoU, Dice, precision, recall and pixel accuracy.",
    )
    evaluate.add_argument(
        "--model",
        action="append",
        metavar="MODEL",
        help="exported model (default: models/model.onnx); repeat it to score an ensemble, "
        "the mean of the models' probabilities (same targets and sizes)",
    )
    evaluate.add_argument("--data", required=True, metavar="ROOT", help="CelebAMask-HQ folder or zip")
    evaluate.add_argument("--ids", metavar="FILE", help="file with one sample id per line (default: all)")
    evaluate.add_argument("--json", metavar="OUT", help="write the metrics as JSON to this file")
    evaluate.add_argument("--batch-size", type=int, default=32, help="images per batch (default: %(default)s)")
    evaluate.add_argument(
        "--flip-average",
        action="store_true",
        help="average each prediction with that of the mirrored photo (test-time flip "
        "augmentation; twice the inference time) to measure what it gains",
    )

    report = commands.add_parser(
        "report",
        help="markdown report: this workspace's run vs a baseline git revision",
        description="Run from the project root after `dvc repro`. Writes a markdown report: a first line with "
        "the verdict (better / worse / same test IoU than the baseline revision, within "
        "--tolerance, and the registry's champion decision), the changed metrics and params "
        "(`dvc metrics diff` / `dvc params diff` against REV) as tables, and the training curves, "
        "threshold sweep and overlay grid. CI posts the same report on pull requests.",
    )
    report.add_argument(
        "--baseline", required=True, metavar="REV", help="git revision to compare with: HEAD~1, main, a commit sha"
    )
    report.add_argument("--out", default="report.md", help="markdown file to write (default: %(default)s)")
    report.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        help="test IoU change below which the verdict is 'same' (default: %(default)s)",
    )
    images = report.add_mutually_exclusive_group()
    images.add_argument(
        "--embed",
        action="store_true",
        help="embed the plots as base64 data URIs: one self-contained file for local previews "
        "(GitHub strips them from comments and job summaries); default: relative links",
    )
    images.add_argument(
        "--no-images",
        action="store_true",
        help="name the plots instead of showing them (for PR comments and job summaries)",
    )

    ui = commands.add_parser(
        "ui",
        help="start the MLflow UI on this project's runs",
        description="Start the MLflow UI (`mlflow server`) on the project's store (the SQLite file "
        "mlflow.db at the project root, or $MLFLOW_TRACKING_URI) and print its URL once it answers. Runs until "
        "Ctrl+C. With MLFLOW_TRACKING_URI pointing at a server, prints that URL instead.",
    )
    ui.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: %(default)s, this machine only)"
    )
    ui.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")

    profile = commands.add_parser(
        "profile",
        help="merge a params profile and a dataset path into params.yaml",
        description="Merge profiles/NAME.yaml (a partial params file: mini = the 504-face real mini set with "
        "5-fold CV on a CPU; celebamask-hq = the reference notebook's full-data setup for a GPU) and data.root into "
        "params.yaml, keeping its comments and key order. Prints the changed keys; `git diff "
        "params.yaml` shows them too, and `dvc repro` then runs with them.",
    )
    profile.add_argument("name", metavar="NAME", help="profile name: a file profiles/NAME.yaml")
    profile.add_argument(
        "--data-root",
        required=True,
        metavar="PATH",
        help="CelebAMask-HQ folder or zip (stored absolute when outside the project, so "
        "`dvc exp run --queue` copies find it)",
    )

    params = commands.add_parser(
        "params",
        help="validate params.yaml, or print its JSON Schema",
        description="check: validate a params file as every stage does before it runs (exit 1 with the first "
        "error, which names the key). schema: print the JSON Schema editors read (params.schema.json, "
        "each key described by its comment in the params file); regenerate the committed one with "
        "`eyelip params schema > params.schema.json`.",
    )
    params.add_argument("action", choices=("check", "schema"))
    params.add_argument("--file", default="params.yaml", metavar="PARAMS", help="params file (default: %(default)s)")

    results = commands.add_parser(
        "results",
        help="markdown table of an MLflow experiment's runs, grouped by recipe",
        description="Read the project's MLflow store and write a markdown table of the finished runs of one "
        "experiment, grouped by recipe (runs whose params differ only in split.fold are the folds "
        "of one cross-validation) and machine (a recipe trained on two CPUs, or with and without bf16, takes two "
        "rows): the params that differ between recipes, training minutes and the machine, "
        "test IoU mean ± std over folds (per target when there are several) and val IoU. Runs listed "
        "before stay listed, from the ledger, after the store loses them.",
    )
    results.add_argument("--experiment", required=True, help="MLflow experiment name (tracking.experiment)")
    results.add_argument(
        "--out", default=None, metavar="FILE", help="markdown file to write (default: docs/results/EXPERIMENT.md)"
    )
    results.add_argument(
        "--ledger",
        default=None,
        metavar="JSON",
        help="the listed runs, kept for when the store no longer has them (default: OUT with "
        ".json); delete it to list the store's runs only",
    )
    return parser


def run_ui(host: str, port: int) -> None:
    from eyelip.tracking.store import tracking_uri

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"MLflow tracking server (MLFLOW_TRACKING_URI): {uri}")
        return
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise EyelipError(f"{uri}: no MLflow store yet; run `dvc repro` first (or set MLFLOW_TRACKING_URI)")
    with socket.socket() as probe:  # mlflow's own message for a taken port is buried in a traceback
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise EyelipError(f"{host}:{port}: cannot listen there ({exc.strerror}); pick another --port") from exc
    # The URL only once the server answers (a first start takes seconds to a minute on busy cores).
    print(f"starting the MLflow UI on {uri}...", flush=True)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # where "every interface" answers from here
    health = f"http://{f'[{local}]' if ':' in local else local}:{port}/health"
    code, stopped = serve_until_stopped(cmd, health, f"MLflow UI on {uri}: http://{host}:{port}  (Ctrl+C stops it)")
    if code != 0 and not stopped:
        raise EyelipError(f"mlflow server exited with status {code}")


def answers(url: str) -> bool:
    """Whether a local ``url`` answers 200 (straight, never through an http_proxy of the environment)."""
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def serve_until_stopped(cmd: list[str], health: str, banner: str) -> tuple[int, bool]:
    """Run ``cmd`` in its own process group until it exits, printing ``banner`` once ``health`` answers
    (polled while the server starts); SIGINT or SIGTERM sent to this process (Ctrl+C, ``kill PID``)
    goes to the whole group (mlflow server and its uvicorn worker), and this process waits for the
    server to exit, so stopping `eyelip ui` by its PID leaves nothing running. Returns the server's exit
    status and whether it was stopped by such a signal."""
    child = subprocess.Popen(cmd, start_new_session=True)
    stopped: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopped.append(signum)
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass  # already gone

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while child.poll() is None and not stopped:
            if answers(health):
                print(banner, flush=True)
                break
            time.sleep(0.5)
        return child.wait(), bool(stopped)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "predict":
            from eyelip.inference.predict import run_predict

            run_predict(args.inputs, args.model, args.out, args.threshold, args.batch_size, args.overlays)
        elif args.command == "evaluate":
            from eyelip.evaluation.evaluate import run_evaluate_cli

            run_evaluate_cli(
                args.model or ["models/model.onnx"], args.data, args.ids, args.json, args.batch_size, args.flip_average
            )
        elif args.command == "report":
            from eyelip.tracking.report import run_report

            run_report(
                args.baseline,
                args.out,
                args.tolerance,
                "embed" if args.embed else "none" if args.no_images else "relative",
            )
        elif args.command == "ui":
            run_ui(args.host, args.port)
        elif args.command == "profile":
            from eyelip.profiles import run_profile

            run_profile(args.name, args.data_root)
        elif args.command == "params":
            from eyelip.params.whole import run_params

            run_params(args.action, args.file)
        elif args.command == "results":
            from eyelip.tracking.results import run_results

            run_results(args.experiment, args.out or f"docs/results/{args.experiment}.md", args.ledger)
    except EyelipError as exc:
        print(f"eyelip {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
