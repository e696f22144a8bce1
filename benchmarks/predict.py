"""Claim: `eyelip predict` on a folder of 1024 px photos is several times as fast as a naive loop.

The same photos go each way in turn, in this process, for `--rounds` rounds (the best of each is kept):

- floor: eyelip's decoder alone (`eyelip.data.preprocess.decode_input`, reduced-scale JPEG decoding
  to the model's input), on every core; nothing else. With overlays a full-resolution decode
  (`decode_image`) is needed as well: the second floor.
- naive: a plain loop, one photo at a time: PIL full-resolution decode, bilinear resize to the
  model's input, the eager PyTorch model (`torch.inference_mode`), probabilities resized bilinearly
  to the photo's size and thresholded, the mask PNG written with Pillow's defaults.
- eyelip: `run_predict`, the code behind `eyelip predict` (ONNX Runtime, batches of 16, PNGs written
  on worker threads): with `--no-overlay` (the naive loop's outputs, one mask per photo), the same
  with the export stage's int8 model (`eyelip.release.export.quantize_int8`, calibrated here on 32 of
  the photos), and as by default (mask and overlay).

The model is a trained `model.pt` (a prior model is refused: the naive loop has no face mesh),
exported to ONNX in a temporary folder. The photos are the synthetic sample generator's faces at
1024 px (CelebA-HQ's size), or any folder read in place (`--photos`, e.g.
../shared/celebamask-hq-mini/CelebA-HQ-img). It prints the CPU, the load average and how closely
the naive loop's masks agree with eyelip's (they differ by the reduced-scale decode only).

    python benchmarks/predict.py [--model models/model.pt] [--n 64] [--rounds 2] [--photos DIR]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eyelip.data.preprocess import decode_image, decode_input
from eyelip.data.synthetic import generate_sample
from eyelip.errors import EyelipError
from eyelip.inference.predict import collect_inputs, run_predict
from eyelip.model.checkpoint import load_model
from eyelip.model.unet import UNet
from eyelip.release.export import export_onnx, quantize_int8
from eyelip.tracking.environment import cpu_info

THRESHOLD = 0.5
NAIVE, MASKS = "naive loop (full decode, eager PyTorch, mask)", "eyelip predict --no-overlay (mask)"


def synthetic_photos(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` synthetic faces of ``size`` px as JPEGs in ``folder`` (the generator's zip, unpacked)."""
    archive, photos = folder / "sample.zip", folder / "photos"
    generate_sample(archive, n, seed=0, image_size=size, mask_size=64, n_jobs=-1)
    photos.mkdir()
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if name.endswith(".jpg"):
                (photos / Path(name).name).write_bytes(zf.read(name))
    archive.unlink()
    return collect_inputs([str(photos)])


def floor(paths: list[Path], size: int, full: bool) -> None:
    """Decode every photo as eyelip does (and in full too with ``full``), one thread per core."""

    def decode(path: Path) -> None:
        data = path.read_bytes()
        decode_input(data, size, str(path))
        if full:
            decode_image(data, None, str(path))

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(decode, paths))


def naive(paths: list[Path], model: UNet, size: int, targets: list[str], out: Path) -> None:
    out.mkdir(exist_ok=True)
    for path in paths:
        photo = Image.open(path).convert("RGB")  # full-resolution decode
        pixels = np.asarray(photo.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None] / 255  # as ToTensor()
        with torch.inference_mode():
            probs = torch.sigmoid(model(tensor))[0].numpy()
        for target, prob in zip(targets, probs):
            upsampled = np.asarray(Image.fromarray(prob, mode="F").resize(photo.size, Image.Resampling.BILINEAR))
            name = f"{path.stem}_mask.png" if len(targets) == 1 else f"{path.stem}_{target}_mask.png"
            Image.fromarray((upsampled >= THRESHOLD).astype(np.uint8) * 255, mode="L").save(out / name)


def rate(n: int, fn: Callable[[], None]) -> float:
    tic = time.perf_counter()
    fn()
    return n / (time.perf_counter() - tic)


def agreement(naive_out: Path, ours: Path) -> float:
    """Share of mask pixels on which the two runs agree, over every mask written."""
    same = total = 0
    for mask in sorted(naive_out.iterdir()):
        a, b = np.asarray(Image.open(mask)), np.asarray(Image.open(ours / mask.name))
        same, total = same + int((a == b).sum()), total + a.size
    return same / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/model.pt", help="a trained model file (default: %(default)s)")
    parser.add_argument("--n", type=int, default=64, help="synthetic photos to generate (default: %(default)s)")
    parser.add_argument("--size", type=int, default=1024, help="their width and height (default: %(default)s)")
    parser.add_argument("--photos", help="a folder of photos to read in place instead")
    parser.add_argument("--batch-size", type=int, default=16, help="eyelip predict's batch size (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the best of each is kept (default: %(default)s)")
    args = parser.parse_args()
    if not Path(args.model).is_file():
        raise SystemExit(f"{args.model}: not found; train one with `./dev repro` or pass --model")
    model, file = load_model(args.model)
    spec = file.spec
    if spec.prior != "none":
        raise SystemExit(f"{args.model}: takes the prior {spec.prior!r}; the naive loop has none, pass a plain model")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = collect_inputs([args.photos]) if args.photos else synthetic_photos(work, args.n, args.size)
        onnx, int8 = work / "model.onnx", work / "model.int8.onnx"
        export_onnx(model, onnx, spec, {})
        calibration = [decode_input(path.read_bytes(), spec.input_size, str(path)) for path in paths[:32]]
        quantize_int8(onnx, int8, np.stack(calibration))
        sizes = sorted({Image.open(path).size for path in paths[:50]})
        print(f"{len(paths)} photos ({', '.join(f'{w}x{h}' for w, h in sizes[:3])}...), model {args.model}")
        model_name, flags = cpu_info()
        print(
            f"CPU {model_name} ({' '.join(flags)}; torch kernels {torch.backends.cpu.get_cpu_capability()}), "
            f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load average "
            + " / ".join(f"{x:.2f}" for x in os.getloadavg())
        )
        size, n = spec.input_size, len(paths)
        inputs = [str(path) for path in paths]
        predict = functools.partial(run_predict, inputs, batch_size=args.batch_size)
        runs: dict[str, Callable[[Path], None]] = {
            "floor: decode for the model (eyelip's decoder, every core)": lambda out: floor(paths, size, False),
            "floor: ... and in full (as overlays need)": lambda out: floor(paths, size, True),
            NAIVE: lambda out: naive(paths, model, size, spec.targets, out),
            MASKS: lambda out: predict(str(onnx), out, overlays=False),
            "eyelip predict --no-overlay, int8 model": lambda out: predict(str(int8), out, overlays=False),
            "eyelip predict (mask + overlay)": lambda out: predict(str(onnx), out),
        }
        # The best of each over the rounds: a job that shares the machine slows down single rounds.
        results = dict.fromkeys(runs, 0.0)
        for _ in range(args.rounds):
            for index, (name, run) in enumerate(runs.items()):
                results[name] = max(results[name], rate(n, functools.partial(run, work / str(index))))
        same = agreement(work / str(list(runs).index(NAIVE)), work / str(list(runs).index(MASKS)))
    width = max(map(len, results))
    for name, value in results.items():
        print(f"  {name:{width}s} {value:7.1f} photos/s")
    naive_rate, floor_rate = results[NAIVE], next(iter(results.values()))
    for name in list(results)[3:]:
        print(
            f"{name}: {results[name] / naive_rate:.2f}x the naive loop, "
            f"{results[name] / floor_rate:.2f}x the decode-only floor"
        )
    print(f"mask pixels on which eyelip and the naive loop agree: {same:.4%}")


if __name__ == "__main__":
    try:
        main()
    except EyelipError as exc:
        raise SystemExit(f"benchmarks/predict.py: error: {exc}") from exc
