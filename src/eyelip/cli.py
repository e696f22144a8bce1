"""The ``eyelip`` command: use a trained model outside the pipeline.

Each sub-command lives in the module that implements it; this file only wires arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from eyelip.errors import EyelipError

DESCRIPTION = """\
eyelip segments the eyes and lips in face photos. Train with `dvc repro` (see README.md);
these commands use the exported model without the training stack."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eyelip", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    predict = commands.add_parser(
        "predict", help="write mask and overlay PNGs for face photos",
        description="For each photo (any size), write NAME_mask.png at the photo's own resolution "
                    "(255 = inside; NAME_TARGET_mask.png per target when the model has several) and "
                    "NAME_overlay.png (prediction tinted on the photo). Uses the exported ONNX model with "
                    "onnxruntime only, so predicting needs no training stack.")
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images")
    predict.add_argument("--model", default="models/model.onnx", help="exported model (default: %(default)s)")
    predict.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    predict.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default: %(default)s)")
    predict.add_argument("--batch-size", type=int, default=16, help="images per batch (default: %(default)s)")

    evaluate = commands.add_parser(
        "evaluate", help="score a model on a CelebAMask-HQ-layout folder or zip",
        description="Evaluate an exported model on any CelebAMask-HQ-layout folder or zip with the pipeline's "
                    "own preprocessing (targets and size from the model's metadata) and the same IoU "
                    "implementation as the evaluate stage. Prints a table; --json writes iou (pooled at the "
                    "model's input size, the seed's protocol), iou_native (at the source mask resolution), "
                    "per-target IoU, Dice, precision, recall and pixel accuracy.")
    evaluate.add_argument("--model", default="models/model.onnx", help="exported model (default: %(default)s)")
    evaluate.add_argument("--data", required=True, metavar="ROOT", help="CelebAMask-HQ folder or zip")
    evaluate.add_argument("--ids", metavar="FILE", help="file with one sample id per line (default: all)")
    evaluate.add_argument("--json", metavar="OUT", help="write the metrics as JSON to this file")
    evaluate.add_argument("--batch-size", type=int, default=32, help="images per batch (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "predict":
            from eyelip.predict import run_predict

            run_predict(args)
        elif args.command == "evaluate":
            from eyelip.evaluate import run_evaluate_cli

            run_evaluate_cli(args)
    except EyelipError as exc:
        print(f"eyelip {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
