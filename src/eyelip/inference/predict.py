"""``eyelip predict``: masks and overlays for face photos of any size, at the photo's own resolution.

Each photo is fed exactly as in training (``preprocess.decode_input`` to the model's square input
size, with its prior's channels). The predicted probabilities are resized bilinearly back to the
photo's width x height and only then thresholded: thresholding first and resizing a binary mask
would give blocky, aliased edges.
Photos are read upright (their EXIF orientation applied, as in ``decode_image``), so masks and
overlays have the size and orientation every viewer shows. With an ONNX model this path needs only
onnxruntime (torch is never imported), and mediapipe (``eyelip[prior]``) when the model takes a prior.

One unreadable photo does not stop the others: each is reported with its reason as it comes, the
rest are written, and the run fails at the end. A folder that cannot be written stops it at once.

Speed (benchmarks/predict.py): the model runs on one batch while worker threads write the previous
one's PNGs (Pillow and zlib release the GIL); PNGs are deflated with zlib's RLE strategy (the same
pixels as the default's, files about 5% larger, several times faster on photos); without overlays
(``--no-overlay``) a JPEG is only decoded at reduced scale for the model, its size read from the header.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import warnings
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image
from tqdm import tqdm

from eyelip import atomic
from eyelip.data.preprocess import decode_image, decode_input
from eyelip.data.prior import NoFaceWarning, require
from eyelip.errors import EyelipError
from eyelip.inference.predictors import Predictor, load_predictor

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
            raise EyelipError(
                f"{stems[path.stem]} and {path} would both write {path.stem}_mask.png; "
                f"rename one or predict them into separate --out folders"
            )
        stems[path.stem] = path
    return list(stems.values())


def read_photo(
    path: Path, size: int, prior: str = "none", full: bool = True
) -> tuple[np.ndarray, Image.Image | tuple[int, int]]:
    """The model input (size, size, 3 + prior channels) and the upright photo at full resolution (only
    its upright width x height without ``full``), from one read of the file; a DataError names the file
    and what is wrong with it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EyelipError(f"{path}: cannot read ({exc.strerror})") from exc
    return decode_photo(data, size, prior, str(path), full)


def decode_photo(
    data: bytes, size: int, prior: str, where: str, full: bool = True
) -> tuple[np.ndarray, Image.Image | tuple[int, int]]:
    """The model input (size, size, 3 + prior channels) and the upright photo at full resolution, or
    without ``full`` only its upright width x height (a JPEG then decoded at reduced scale only)."""
    if full:
        return decode_input(data, size, where, prior), Image.fromarray(decode_image(data, None, where), mode="RGB")
    return decode_input(data, size, where, prior), upright_size(data)


def upright_size(data: bytes) -> tuple[int, int]:
    """Width and height of an image that ``decode_input`` has read, as ``decode_image`` turns it upright;
    a JPEG's from its header alone (its EXIF comes first), other formats' after decoding (a PNG may
    store its EXIF after the pixels)."""
    image = Image.open(io.BytesIO(data))
    if image.format != "JPEG":
        image.load()
    width, height = image.size
    turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)  # the transposing orientations
    return (height, width) if turned else (width, height)


def mask_image(mask: np.ndarray) -> Image.Image:
    """A boolean mask as the PNG eyelip writes: mode L, 255 = inside."""
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")


def resize_probabilities(probs: np.ndarray, width: int, height: int) -> np.ndarray:
    """(C, S, S) probabilities -> (C, height, width), bilinear per channel."""
    return np.stack(
        [
            np.asarray(
                Image.fromarray(channel.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
            )
            for channel in probs
        ]
    )


def overlay(photo: Image.Image, masks: np.ndarray) -> Image.Image:
    """The photo with each target's mask tinted in its own colour (later targets on top)."""
    pixels = np.array(photo)
    tinted = masks.any(axis=0)
    inside = pixels[tinted].astype(np.float32)  # blended in float, rounded once: only pixels under a mask
    for index, mask in enumerate(masks[:, tinted]):
        colour = np.array(COLOURS[index % len(COLOURS)], dtype=np.float32)
        inside[mask] = (1 - TINT) * inside[mask] + TINT * colour
    pixels[tinted] = inside.round().astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def save_png(image: Image.Image, path: Path) -> None:
    try:
        with atomic.atomic_path(path) as tmp:
            image.save(tmp, format="PNG", compress_type=zlib.Z_RLE)
    except OSError as exc:  # the folder, not the photo: every later write would fail the same way
        raise EyelipError(f"{path}: cannot write ({exc.strerror or exc}); pass a writable --out folder") from exc


def prepare_out(out: Path) -> list[Path]:
    """Create ``out`` and check that files can be written in it, before any model is loaded; returns the
    folders it created, deepest first."""
    created = [folder for folder in (out, *out.parents) if not folder.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise EyelipError(
            f"{out}: cannot write the output folder there ({exc.strerror or exc}); pass a writable --out folder"
        ) from exc
    return created


def write_outputs(
    path: Path, photo: Image.Image | tuple[int, int], probs: np.ndarray, targets: list[str], threshold: float, out: Path
) -> float:
    """Write the mask PNG(s) and, given the photo itself (not only its size), the overlay for one
    photo; returns the foreground fraction of its masks."""
    size = photo.size if isinstance(photo, Image.Image) else photo
    masks = resize_probabilities(probs, *size) >= threshold
    if len(targets) == 1:
        save_png(mask_image(masks[0]), out / f"{path.stem}_mask.png")
    else:
        for target, mask in zip(targets, masks):
            save_png(mask_image(mask), out / f"{path.stem}_{target}_mask.png")
    if isinstance(photo, Image.Image):
        save_png(overlay(photo, masks), out / f"{path.stem}_overlay.png")
    return float(masks.mean())


def batches(paths: list[Path], batch_size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), batch_size):
        yield paths[start : start + batch_size]


@dataclass
class Outcome:
    """What ``predict_files`` did: photos written, unreadable photos with the reason, photos without a face."""

    written: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    no_face: list[Path] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)  # foreground fraction of each written photo


def _read(
    path: Path, predictor: Predictor, full: bool, outcome: Outcome, bar: tqdm
) -> tuple[np.ndarray, Image.Image | tuple[int, int]] | None:
    """``read_photo``, or None after reporting why it failed; a no-face warning is reported and counted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoFaceWarning)
        try:
            decoded = read_photo(path, predictor.input_size, predictor.prior, full)
        except EyelipError as exc:
            outcome.failed[path] = str(exc)
            bar.write(f"eyelip predict: skipped {exc}", file=sys.stderr)
            return None
    for warning in caught:
        if issubclass(warning.category, NoFaceWarning):
            outcome.no_face.append(path)
            bar.write(f"eyelip predict: warning: {warning.message}", file=sys.stderr)
        else:  # not ours to handle: shown as it would have been
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return decoded


def predict_files(
    predictor: Predictor,
    paths: list[Path],
    out: Path,
    threshold: float,
    batch_size: int,
    overlays: bool = True,
    workers: int = 0,
) -> Outcome:
    """Predict and write outputs for every readable photo of ``paths``; see :class:`Outcome`. Photos are
    read here, in order (the reports and no-face warnings come in order too), and written by ``workers``
    threads (0: one per core) while the next batch is read and predicted; at most one batch waits."""
    outcome = Outcome()
    pending: deque[tuple[Path, Future[float]]] = deque()

    def collect() -> None:  # every pending write; a write error (EyelipError) stops the run here
        while pending:
            path, written = pending.popleft()
            outcome.coverage.append(written.result())
            outcome.written.append(path)
            bar.update()

    with (
        tqdm(total=len(paths), unit="image", desc="predict") as bar,
        ThreadPoolExecutor(workers or os.cpu_count()) as pool,
    ):
        for chunk in batches(paths, batch_size):
            decoded = [
                (path, found) for path in chunk if (found := _read(path, predictor, overlays, outcome, bar)) is not None
            ]
            bar.update(len(chunk) - len(decoded))
            if not decoded:
                continue
            probs = predictor(np.stack([model_input for _, (model_input, _) in decoded]))
            collect()  # the previous batch: its photos are freed before the next batch is read
            for (path, (_, photo)), prob in zip(decoded, probs):
                pending.append((path, pool.submit(write_outputs, path, photo, prob, predictor.targets, threshold, out)))
        collect()
    return outcome


def run_predict(
    inputs: Sequence[str],
    model: str,
    out: str | Path,
    threshold: float = 0.5,
    batch_size: int = 16,
    overlays: bool = True,
) -> None:
    """``eyelip predict``: masks (and overlays) for ``inputs`` (files or folders) in ``out``."""
    if not 0.0 < threshold < 1.0:
        raise EyelipError(f"--threshold must be between 0 and 1 (exclusive), got {threshold}")
    if batch_size < 1:
        raise EyelipError(f"--batch-size must be at least 1, got {batch_size}")
    paths = collect_inputs(inputs)
    out = Path(out)
    created = prepare_out(out)
    try:
        predictor = load_predictor(model)
        require(predictor.prior, model)  # a prior model without mediapipe: stop before the first photo
        outcome = predict_files(predictor, paths, out, threshold, batch_size, overlays)
    finally:
        if not any(out.iterdir()):  # nothing written (an error, every photo unreadable): leave no empty folder
            for folder in created:
                folder.rmdir()
    written = len(outcome.written)
    outputs = "mask" if len(predictor.targets) == 1 else f"{len(predictor.targets)} masks"
    outputs += " + overlay" if overlays else ""
    coverage = f"; mean foreground {np.mean(outcome.coverage):.2%}" if written else ""
    print(
        f"predicted {written} image{'s' * (written != 1)} with {model} (targets: {', '.join(predictor.targets)}"
        f"{coverage}) -> {outputs} each in {out}"
    )
    if predictor.prior != "none":
        print(
            f"no face found in {len(outcome.no_face)} of {written} photo{'s' * (written != 1)}"
            + (" (each warned about above): their masks come from the pixels alone" if outcome.no_face else "")
        )
    if outcome.failed:
        kept = f"the masks of the other {written} are in {out}" if written else "nothing was written"
        raise EyelipError(
            f"{len(outcome.failed)} of {len(paths)} photos could not be read (each reported above with "
            f"its reason); {kept}"
        )
