"""Score a predictor on a set of faces: the evaluate stage and ``eyelip evaluate`` share all of it.

Every score comes from :mod:`eyelip.model.metrics` counts at threshold 0.5, at two resolutions:

* model size (``iou``, the headline and the reference notebook's protocol): predictions against
  the target masks resized by the pipeline's own rule (``preprocess.resize_mask``);
* native (``iou_native``): probabilities upsampled bilinearly to the source mask resolution
  (512 px in CelebAMask-HQ), thresholded, against the fused masks themselves. Even a perfect
  128 px prediction cannot match 512 px masks exactly, so this ceiling is below 1.

With several targets, ``<metric>_combined`` scores all of them merged into one mask (a pixel is
positive when any target is): for eyes and lips, the reference notebook's single eyes|lips target.

Pixel accuracy is reported next to the all-background baseline's accuracy: eyes and lips cover
~1.5% of a face photo, so predicting nothing already scores ~98.5%.

Batches are streamed: only confusion counts (4 integers per image and target) and the 8 best and
worst images are kept, so memory does not grow with the number of images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eyelip import atomic
from eyelip.data.arrays import unpack_masks
from eyelip.data.dataset import ResizedArrays, split_rows
from eyelip.data.fuse import FusedMasks, FuseSample, check_targets
from eyelip.data.parallel import map_samples
from eyelip.data.resize import resize_sample
from eyelip.data.source import Source
from eyelip.data.spec import DataSpec
from eyelip.errors import EyelipError
from eyelip.inference.predictors import Predictor
from eyelip.model.metrics import accuracy, confusion, dice, iou, precision, recall
from eyelip.tracking.plots import rows_csv, save_figure

THRESHOLD = 0.5
# Rounded so that 0.5 is exactly the headline threshold (np.arange accumulates float error).
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.05, 0.951, 0.05), 2))
SHOWN = 8  # best and worst images in the overlay grid
SCORES = {
    "iou": lambda c: iou(c),
    "iou_per_image": lambda c: iou(c, "per_image"),
    "dice": dice,
    "precision": precision,
    "recall": recall,
    "accuracy": accuracy,
}


@dataclass
class Batch:
    """Model inputs (image and prior channels), target masks (C, S, S) and native masks (C, H, W)."""

    ids: list[int]
    images: np.ndarray  # uint8 (B, I, I, 3 + P); I = S * input_scale, P prior channels
    masks: np.ndarray  # 0/1 (B, C, S, S)
    native: list[np.ndarray]  # bool (C, H, W) each; a list, as sizes may differ between samples


@dataclass
class Shown:
    """One image of the overlay grid: ground truth and prediction, any target."""

    id: int
    iou: float
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray


@dataclass
class Evaluation:
    metrics: dict[str, float | int]
    targets: list[str]
    size: int
    native_sizes: list[tuple[int, int]]
    thresholds: list[dict[str, float]]  # threshold, iou, iou_<target>
    per_image: list[dict[str, float | int]]  # id, iou_<target>, iou_native_<target>
    best: list[Shown] = field(default_factory=list)
    worst: list[Shown] = field(default_factory=list)

    def table(self) -> str:
        """Targets x metrics at both resolutions, then the numbers that put accuracy in context."""
        native = "x".join(map(str, self.native_sizes[0][::-1])) if len(self.native_sizes) == 1 else "mixed"
        header = f"{'target':<14}{'resolution':<18}" + "".join(
            f"{n:>10}" for n in ("IoU", "IoU/img", "Dice", "precision", "recall", "accuracy")
        )
        lines = [header, "-" * len(header)]
        names = [*self.targets, "mean", "combined"] if len(self.targets) > 1 else self.targets
        for name in names:
            tag = "" if name == "mean" else f"_{name}"
            for suffix, label in (("", f"model {self.size}x{self.size}"), ("_native", f"native {native}")):
                row = [self.metrics[f"{metric}{suffix}{tag}"] for metric in SCORES]
                lines.append(f"{name:<14}{label:<18}" + "".join(f"{v:>10.4f}" for v in row))
        m = self.metrics
        lines.append(
            f"{m['images']} images, threshold {THRESHOLD}; target pixels {m['target_share']:.2%}, so an "
            f"all-background prediction already has accuracy {m['background_accuracy']:.4f}: IoU is the headline"
        )
        return "\n".join(lines)


def _scores(counts: torch.Tensor, targets: list[str], suffix: str) -> dict[str, float]:
    """``<metric><suffix>`` (macro over targets) and ``<metric><suffix>_<target>`` from (N, C, 4) counts."""
    out: dict[str, float] = {}
    for metric, score in SCORES.items():
        values = score(counts)
        out[f"{metric}{suffix}"] = values.mean().item()
        out.update({f"{metric}{suffix}_{name}": values[c].item() for c, name in enumerate(targets)})
    return out


def _keep(shown: list[Shown], new: list[Shown], best: bool) -> list[Shown]:
    ranked = sorted(shown + new, key=lambda s: (-s.iou if best else s.iou, s.id))
    return ranked[:SHOWN]


def evaluate(predictor: Predictor, batches: Iterable[Batch]) -> Evaluation:
    """Run ``predictor`` over ``batches`` and score it; see the module docstring."""
    targets, size = list(predictor.targets), int(predictor.size)
    counts, native_counts, ids = [], [], []
    several = len(targets) > 1  # then all targets are also scored as one mask
    merged: list[torch.Tensor] = []
    native_merged: list[torch.Tensor] = []
    sweep = torch.zeros(len(THRESHOLDS), len(targets), 4, dtype=torch.int64)
    native_sizes: set[tuple[int, int]] = set()
    best: list[Shown] = []
    worst: list[Shown] = []
    for batch in batches:
        probs_np = np.asarray(predictor(batch.images), dtype=np.float32)
        expected = (len(batch.ids), len(targets), size, size)
        if probs_np.shape != expected:
            raise EyelipError(f"the model returned probabilities of shape {probs_np.shape}, expected {expected}")
        probs, masks = torch.from_numpy(probs_np), torch.from_numpy(np.asarray(batch.masks))
        batch_counts = confusion(probs, masks, THRESHOLD)
        counts.append(batch_counts)
        for k, t in enumerate(THRESHOLDS):
            sweep[k] += confusion(probs, masks, t).sum(0)
        for p, truth in zip(probs, batch.native):
            native_sizes.add(truth.shape[1:])
            # Bilinear on probabilities, then the threshold: a smooth outline scores closer to the
            # true one than 4x4 blocks would (a higher ceiling for a perfect 128 px prediction).
            up = F.interpolate(p[None], size=truth.shape[1:], mode="bilinear", align_corners=False)
            native_counts.append(confusion(up, torch.from_numpy(truth)[None], THRESHOLD))
            if several:
                native_merged.append(
                    confusion(up.amax(1, keepdim=True), torch.from_numpy(truth).amax(0)[None, None], THRESHOLD)
                )
        if several:
            merged.append(confusion(probs.amax(1, keepdim=True), masks.amax(1, keepdim=True), THRESHOLD))
        ids.extend(batch.ids)
        # Ranked by the per-image IoU averaged over targets; the overlay shows all targets at once.
        ranking = iou(batch_counts, "none").mean(1).tolist()
        pred, truth = probs_np >= THRESHOLD, np.asarray(batch.masks) > 0
        shown = [
            Shown(i, r, _block_mean(batch.images[b, ..., :3], size), truth[b].any(0), pred[b].any(0))
            for b, (i, r) in enumerate(zip(batch.ids, ranking))
        ]
        best, worst = _keep(best, shown, True), _keep(worst, shown, False)
    if not ids:
        raise EyelipError("no images to evaluate")
    counts_all, native_all = torch.cat(counts), torch.cat(native_counts)
    pooled = counts_all.sum(0).double()  # (C, 4)
    share = (pooled[:, 0] + pooled[:, 2]) / pooled.sum(1)
    metrics: dict[str, float | int] = {
        "images": len(ids),
        **_scores(counts_all, targets, ""),
        **_scores(native_all, targets, "_native"),
        "target_share": share.mean().item(),
        "background_accuracy": (1 - share).mean().item(),
    }
    if several:
        for suffix, parts in (("", merged), ("_native", native_merged)):
            metrics.update({f"{k}_combined": v for k, v in _scores(torch.cat(parts), [], suffix).items()})
    sweep_iou = iou(sweep, "none")  # thresholds stand in for images: (T, C)
    thresholds = [
        {"threshold": t, "iou": row.mean().item(), **{f"iou_{n}": row[c].item() for c, n in enumerate(targets)}}
        for t, row in zip(THRESHOLDS, sweep_iou)
    ]
    per_image_iou, per_image_native = iou(counts_all, "none"), iou(native_all, "none")
    per_image = [
        {
            "id": i,
            **{f"iou_{n}": per_image_iou[r, c].item() for c, n in enumerate(targets)},
            **{f"iou_native_{n}": per_image_native[r, c].item() for c, n in enumerate(targets)},
        }
        for r, i in enumerate(ids)
    ]
    return Evaluation(metrics, targets, size, sorted(native_sizes), thresholds, per_image, best, worst)


def batched(
    samples: Iterable[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]], batch_size: int
) -> Iterator[Batch]:
    """Group ``(id, (image, masks, native))`` samples into batches."""
    chunk: list[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == batch_size:
            yield _stack(chunk)
            chunk = []
    if chunk:
        yield _stack(chunk)


def _stack(chunk: list[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]]) -> Batch:
    return Batch(
        [i for i, _ in chunk],
        np.stack([s[0] for _, s in chunk]),
        np.stack([s[1] for _, s in chunk]),
        [s[2] for _, s in chunk],
    )


# --- the evaluate stage: the pipeline's own arrays ------------------------------------------------


@dataclass(frozen=True)
class TestSplit:
    """The test split as the evaluate stage scores it: the resized rows of ``data/split/test.txt``
    and their native masks. The evaluate and export stages and the registry's re-scoring all use it."""

    __test__ = False  # not a pytest test class, whatever its name
    arrays: ResizedArrays
    fused: FusedMasks
    rows: np.ndarray

    @classmethod
    def open(
        cls, resized: str | Path = "data/resized", fused: str | Path = "data/fused", split: str | Path = "data/split"
    ) -> TestSplit:
        arrays = ResizedArrays(resized)
        return cls(arrays, FusedMasks(fused), split_rows(arrays, split, "test"))

    @property
    def spec(self) -> DataSpec:
        return self.arrays.spec

    @property
    def ids(self) -> list[int]:
        return [self.arrays.ids[r] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def inputs(self, limit: int) -> np.ndarray:
        """Model inputs (uint8) of the first ``limit`` test rows, read in disk order."""
        return np.asarray(self.arrays.images[np.sort(self.rows[:limit])])

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Batches of the resized rows with their native masks from ``data/fused``; the targets'
        channels only (auxiliary targets are trained, never scored)."""
        ids = self.ids
        fused_row = {sample_id: r for r, sample_id in enumerate(self.fused.ids)}
        missing = [i for i in ids if i not in fused_row]
        if missing:
            raise EyelipError(f"data/fused: ids {missing[:5]} have no fused masks; re-run `dvc repro`")
        n, images, masks = len(self.spec.targets), self.arrays.images, self.arrays.masks
        samples = ((i, (images[r], masks[r][:n], self.fused[fused_row[i]][:n])) for r, i in zip(self.rows, ids))
        return batched(samples, batch_size)

    def digest(self) -> str:
        """Short hash of the test ids, images and masks: equal digests mean the same test data."""
        sha = hashlib.sha1(json.dumps([int(i) for i in self.ids]).encode())
        for row in self.rows:
            sha.update(np.ascontiguousarray(self.arrays.images[row]).tobytes())
            sha.update(np.ascontiguousarray(self.arrays.masks[row]).tobytes())
        return sha.hexdigest()[:12]


# --- `eyelip evaluate`: any CelebAMask-HQ-layout folder or zip ------------------------------------


@dataclass(frozen=True)
class EvaluateSample:
    """Picklable per-sample job with the stages' own code: fuse, resize masks, decode the image.

    Returns the native masks bit-packed (8x less to send back from a worker)."""

    fuse: FuseSample
    size: int
    input_size: int
    prior: str

    def __call__(self, sample_id: int) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], np.ndarray]]:
        shape, packed = self.fuse(sample_id)
        image, masks = resize_sample(
            self.fuse.source, sample_id, unpack_masks(packed, shape[1]), self.size, self.input_size, self.prior
        )
        return image, masks, (shape, packed)


# What `eyelip evaluate`'s reader can do about a bad sample of its --data.
_REMEDY = "replace or restore the file, or pass --ids with the ids to score to leave the sample out"


def source_batches(
    source: Source, ids: Sequence[int], predictor: Predictor, batch_size: int, n_jobs: int = -1
) -> Iterator[Batch]:
    """Batches prepared from a dataset copy exactly as the fuse-masks and resize stages do."""
    parts = _model_parts(predictor)
    job = EvaluateSample(
        FuseSample(source, parts, predictor.rule), int(predictor.size), int(predictor.input_size), predictor.prior
    )
    samples = (
        (i, (image, masks, unpack_masks(packed, shape[1])))
        for i, (image, masks, (shape, packed)) in map_samples(
            job, ids, on_error="fail", skipped={}, n_jobs=n_jobs, desc="evaluate", remedy=_REMEDY
        )
    )
    return batched(samples, batch_size)


def _model_parts(predictor: Predictor) -> dict[str, list[str]]:
    """The model's targets and their parts, checked: models exported before parts were recorded may
    not know them (``eyelip.model.spec.legacy``)."""
    try:
        return check_targets(predictor.target_parts, "target_parts")
    except EyelipError as exc:
        raise EyelipError(f"the model's target_parts are invalid: {exc}; re-train or re-export it") from exc


def read_ids_file(path: str | Path, available: Sequence[int], where: str) -> list[int]:
    """Ids listed in ``path`` (one per line), each checked against the dataset's images."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise EyelipError(f"--ids {path}: cannot read ({exc.strerror})") from exc
    ids: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                ids.append(int(line))
            except ValueError:
                raise EyelipError(f"--ids {path}:{number}: {line.strip()!r} is not a sample id") from None
    if not ids:
        raise EyelipError(f"--ids {path}: no sample ids in the file")
    known = set(available)
    missing = [i for i in ids if i not in known]
    if missing:
        raise EyelipError(f"--ids {path}: {len(missing)} ids have no image in {where}, e.g. {missing[:5]}")
    return ids


def evaluate_source(
    predictor: Predictor, source: Source, ids: Sequence[int] | None = None, batch_size: int = 32, n_jobs: int = -1
) -> Evaluation:
    return evaluate(
        predictor, source_batches(source, source.ids() if ids is None else ids, predictor, batch_size, n_jobs)
    )


def run_evaluate_cli(
    models: Sequence[str],
    data: str,
    ids_file: str | None = None,
    json_out: str | None = None,
    batch_size: int = 32,
    flip_average: bool = False,
) -> None:
    """``eyelip evaluate``: score ``models`` (one, or an ensemble of several) on a CelebAMask-HQ copy."""
    from eyelip.data.layout import mirror_pairs
    from eyelip.data.prior import require
    from eyelip.inference.predictors import Averaged, FlipAveraged, load_predictor

    if batch_size < 1:
        raise EyelipError(f"--batch-size must be >= 1, got {batch_size}")
    paths = list(models)
    predictor = load_predictor(paths[0]) if len(paths) == 1 else Averaged([load_predictor(p) for p in paths], paths)
    require(predictor.prior, paths[0])  # a prior model without mediapipe: stop before the first photo
    if flip_average:
        predictor = FlipAveraged(predictor, mirror_pairs(predictor.target_parts))
    source = Source(data, name="--data", hint="pass a CelebAMask-HQ folder or CelebAMask-HQ.zip")
    available = source.ids()
    ids = read_ids_file(ids_file, available, source.describe("CelebA-HQ-img")) if ids_file else available
    result = evaluate_source(predictor, source, ids, batch_size)
    print(result.table())
    if json_out:
        atomic.write_json(json_out, result.metrics)


# --- reports ---------------------------------------------------------------------------------


def _block_mean(image: np.ndarray, size: int) -> np.ndarray:
    """A copy of an (I, I, 3) model input at the mask size S (I = k*S), for drawing masks over it."""
    k = image.shape[0] // size
    return image.reshape(size, k, size, k, 3).mean((1, 3)).round().astype(np.uint8)


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Ground truth only green, prediction only magenta, both white, blended over the photo."""
    colour = np.zeros_like(image)
    colour[truth & ~pred] = (0, 255, 0)
    colour[pred & ~truth] = (255, 0, 255)
    colour[truth & pred] = (255, 255, 255)
    marked = (truth | pred)[..., None]
    blended = image * (1 - alpha) + colour * alpha
    return np.where(marked, blended, image).astype(np.uint8)


def crop(truth: np.ndarray, pred: np.ndarray, margin: int) -> tuple[slice, slice]:
    """A square around everything marked (eyes to lips), so the thin parts stay visible."""
    marked = truth | pred
    if not marked.any():
        return slice(None), slice(None)
    ys, xs = np.flatnonzero(marked.any(1)), np.flatnonzero(marked.any(0))
    side = max(ys[-1] - ys[0], xs[-1] - xs[0]) + 1 + 2 * margin
    size = marked.shape[0]
    side = min(side, size)
    y0 = int(np.clip((ys[0] + ys[-1] + 1 - side) // 2, 0, size - side))
    x0 = int(np.clip((xs[0] + xs[-1] + 1 - side) // 2, 0, size - side))
    return slice(y0, y0 + side), slice(x0, x0 + side)


def write_reports(result: Evaluation, prefix: str | Path) -> list[Path]:
    """``<prefix>_thresholds.csv/.png``, ``_per_image.csv``, ``_histogram.png``, ``_overlays.png``."""
    import matplotlib.pyplot as plt  # after eyelip.tracking.plots, which selects the headless backend

    prefix = Path(prefix)
    paths = {
        name: prefix.with_name(f"{prefix.name}_{name}")
        for name in ("thresholds.csv", "per_image.csv", "thresholds.png", "histogram.png", "overlays.png")
    }
    atomic.write_text(paths["thresholds.csv"], rows_csv(result.thresholds))
    atomic.write_text(paths["per_image.csv"], rows_csv(result.per_image))

    fig, axis = plt.subplots(figsize=(5.5, 3.8))
    axis.plot(
        [r["threshold"] for r in result.thresholds],
        [r["iou"] for r in result.thresholds],
        marker="o",
        ms=3,
        label="mean" if len(result.targets) > 1 else result.targets[0],
    )
    if len(result.targets) > 1:
        for name in result.targets:
            axis.plot(
                [r["threshold"] for r in result.thresholds],
                [r[f"iou_{name}"] for r in result.thresholds],
                ls="--",
                label=name,
            )
    axis.axvline(THRESHOLD, color="grey", lw=0.8, ls=":")
    axis.set(
        title=f"Pooled IoU by threshold ({result.size} px, {result.metrics['images']} images)",
        xlabel="probability threshold",
        ylabel="IoU",
    )
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(fig, paths["thresholds.png"])

    fig, axis = plt.subplots(figsize=(5.5, 3.8))
    bins = np.linspace(0, 1, 41)
    for name in result.targets:
        values = [r[f"iou_{name}"] for r in result.per_image]
        axis.hist(values, bins=bins, histtype="step", lw=1.5, label=f"{name} (mean {np.mean(values):.3f})")
    axis.set(title=f"Per-image IoU ({result.size} px, threshold {THRESHOLD})", xlabel="IoU", ylabel="images")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left")
    save_figure(fig, paths["histogram.png"])

    rows = [("best", result.best), ("worst", result.worst)]
    fig, axes = plt.subplots(2, SHOWN, figsize=(2 * SHOWN, 4.6), squeeze=False)
    for (label, shown), line in zip(rows, axes):
        for axis, item in zip(line, [*shown, *[None] * (SHOWN - len(shown))]):
            axis.axis("off")
            if item is not None:
                box = crop(item.truth, item.pred, margin=result.size // 16)
                axis.imshow(overlay(item.image, item.truth, item.pred)[box])
                axis.set_title(f"{label}: id {item.id}\nIoU {item.iou:.3f}", fontsize=9)
    fig.suptitle(
        "Test images, best and worst per-image IoU: green = ground truth only, magenta = prediction only, white = both",
        fontsize=10,
    )
    save_figure(fig, paths["overlays.png"])
    return list(paths.values())
