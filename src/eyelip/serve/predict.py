"""``eyelip predict``: masks and overlays for face photos of any size, at the photo's own resolution.

Each photo is fed exactly as in training (``preprocess.decode_input`` to the model's square input
size, with its prior's channels). The predicted probabilities are resized bilinearly back to the photo's width x height and only
then thresholded: thresholding first and resizing a binary mask would give blocky, aliased edges.
Pixels are read as stored (no EXIF rotation), the same as ``decode_image``, so masks line up with
the stored image. With an ONNX model this path needs only onnxruntime (torch is never imported), and
mediapipe when the model takes a prior.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from eyelip import atomic
from eyelip.data.preprocess import decode_input
from eyelip.errors import DataError, EyelipError
from eyelip.serve.predictors import Predictor, load_predictor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
COLOURS = ((255, 0, 0), (0, 200, 255), (0, 255, 0), (255, 200, 0), (255, 0, 255), (0, 0, 255))
TINT = 0.45  # overlay opacity of a target's colour


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Files as given (whatever their suffix: a bad one fails when decoded), folders' images sorted
    by name (not recursive); every output stem must be unique or files would overwrite each other."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise EyelipError(f"{item}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif item.is_file():
            paths.append(item)
        else:
            raise EyelipError(f"{item}: no such file or folder")
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems and stems[path.stem] != path:
            raise EyelipError(f"{stems[path.stem]} and {path} would both write {path.stem}_mask.png; "
                              f"rename one or predict them into separate --out folders")
        stems[path.stem] = path
    return list(stems.values())


def read_photo(path: Path, size: int, prior: str = "none") -> tuple[np.ndarray, Image.Image]:
    """The model input (size, size, 3 + prior channels) and the photo at full resolution, from one
    read of the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EyelipError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        model_input = decode_input(data, size, str(path), prior)
        photo = Image.open(io.BytesIO(data)).convert("RGB")  # a JPEG draft decode can mask truncation
    except DataError as exc:
        raise EyelipError(f"{path}: not a readable image ({exc.__cause__}); pass only image files") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise EyelipError(f"{path}: corrupt or truncated image ({exc}); pass only image files") from exc
    return model_input, photo


def resize_probabilities(probs: np.ndarray, width: int, height: int) -> np.ndarray:
    """(C, S, S) probabilities -> (C, height, width), bilinear per channel."""
    return np.stack([np.asarray(Image.fromarray(channel.astype(np.float32), mode="F")
                                .resize((width, height), Image.Resampling.BILINEAR)) for channel in probs])


def overlay(photo: Image.Image, masks: np.ndarray) -> Image.Image:
    """The photo with each target's mask tinted in its own colour (later targets on top)."""
    pixels = np.asarray(photo, dtype=np.float32)
    for index, mask in enumerate(masks):
        colour = np.array(COLOURS[index % len(COLOURS)], dtype=np.float32)
        pixels[mask] = (1 - TINT) * pixels[mask] + TINT * colour
    return Image.fromarray(pixels.round().astype(np.uint8), mode="RGB")


def save_png(image: Image.Image, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def write_outputs(path: Path, photo: Image.Image, probs: np.ndarray, targets: list[str], threshold: float,
                  out: Path) -> np.ndarray:
    """Write the mask PNG(s) and the overlay for one photo; returns the (C, H, W) boolean masks."""
    masks = resize_probabilities(probs, *photo.size) >= threshold
    if len(targets) == 1:
        save_png(Image.fromarray(masks[0].astype(np.uint8) * 255, mode="L"), out / f"{path.stem}_mask.png")
    else:
        for target, mask in zip(targets, masks):
            save_png(Image.fromarray(mask.astype(np.uint8) * 255, mode="L"), out / f"{path.stem}_{target}_mask.png")
    save_png(overlay(photo, masks), out / f"{path.stem}_overlay.png")
    return masks


def batches(paths: list[Path], batch_size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), batch_size):
        yield paths[start:start + batch_size]


def predict_files(predictor: Predictor, paths: list[Path], out: Path, threshold: float, batch_size: int) -> float:
    """Predict and write outputs for ``paths``; returns the mean foreground fraction over all photos."""
    out.mkdir(parents=True, exist_ok=True)
    coverage = []
    with tqdm(total=len(paths), unit="image", desc="predict") as bar:
        for chunk in batches(paths, batch_size):
            decoded = [read_photo(path, predictor.input_size, predictor.prior) for path in chunk]
            probs = predictor(np.stack([model_input for model_input, _ in decoded]))
            for path, (_, photo), prob in zip(chunk, decoded, probs):
                coverage.append(write_outputs(path, photo, prob, predictor.targets, threshold, out).mean())
                bar.update()
    return float(np.mean(coverage))


def run_predict(inputs: Sequence[str], model: str, out: str | Path, threshold: float = 0.5,
                batch_size: int = 16) -> None:
    """``eyelip predict``: masks and overlays for ``inputs`` (files or folders) in ``out``."""
    if not 0.0 < threshold < 1.0:
        raise EyelipError(f"--threshold must be between 0 and 1 (exclusive), got {threshold}")
    if batch_size < 1:
        raise EyelipError(f"--batch-size must be at least 1, got {batch_size}")
    paths = collect_inputs(inputs)
    predictor = load_predictor(model)
    out = Path(out)
    coverage = predict_files(predictor, paths, out, threshold, batch_size)
    outputs = "mask" if len(predictor.targets) == 1 else f"{len(predictor.targets)} masks"
    print(f"predicted {len(paths)} image{'s' * (len(paths) != 1)} with {model} "
          f"(targets: {', '.join(predictor.targets)}; mean foreground {coverage:.2%}) -> {outputs} + overlay "
          f"each in {out}")
