"""The training loop: seeded, resumable, early-stopped, with the best model checkpointed.

Every epoch records ``train_iou``, ``val_iou``, ``train_jaccard_loss``, ``val_jaccard_loss``
(``train_loss``/``val_loss`` too when the loss combines terms) and ``lr``, and hands the row to
``on_epoch`` (MLflow logging). ``train_iou`` is measured on the augmented batches while training,
as Keras reports it (at the training resolution: ``resize.train_scale`` times the mask size);
``val_iou`` in eval mode, at the mask size. IoU is ``eyelip.model.metrics``'s pooled IoU at 0.5.
With ``train.ema`` the model validated and saved is a moving average of the weights
(:mod:`eyelip.training.ema`); with ``train.val_raw`` too, ``val_iou_raw`` scores the trained weights themselves.

Auxiliary targets (``data.aux_targets``: extra mask channels after the targets) add their loss,
weighted by ``train.aux_weight``, and ``train_aux_loss``/``val_aux_loss``; IoU and the Jaccard loss
are the targets' alone. The saved model keeps only the targets' outputs: the head is a 1x1 conv,
so dropping a channel's row leaves the others' logits unchanged.

The resume state (``eyelip.model.checkpoint.Resume``: weights, optimizer, schedule, RNG states,
history, and the best model so far) is written atomically after every epoch. Re-running with the
same config and data resumes from it and ends with the same result as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from eyelip.data.dataset import ResizedArrays
from eyelip.data.layout import mirror_pairs
from eyelip.errors import DataError, ParamError
from eyelip.model.checkpoint import Resume, model_file, write_model_file
from eyelip.model.losses import CombinedLoss, build_loss
from eyelip.model.metrics import ConfusionMeter, iou
from eyelip.model.spec import ModelSpec
from eyelip.model.unet import build_model
from eyelip.params.model import ModelParams
from eyelip.params.runtime import RuntimeParams
from eyelip.params.train import TrainParams
from eyelip.training.augment import Augment
from eyelip.training.distributed import SINGLE, Dist
from eyelip.training.ema import WeightAverage


class Trained(Protocol):
    """The params training reads (the train stage's view of params.yaml, or the whole ``Params``)."""

    @property
    def train(self) -> TrainParams: ...

    @property
    def model(self) -> ModelParams: ...

    @property
    def runtime(self) -> RuntimeParams: ...


class TrainConfig(TrainParams):
    """What training uses: the ``train`` section, the ``model`` section and the ``runtime`` settings, typed and
    validated by the :mod:`eyelip.params` section models (whose defaults these are)."""

    model: ModelParams = ModelParams()
    runtime: RuntimeParams = RuntimeParams()

    @classmethod
    def from_params(cls, params: Trained) -> TrainConfig:
        return cls(**dict(params.train), model=params.model, runtime=params.runtime)

    def fingerprint(self, data_version: str, world: int = 1) -> str:
        """Identifies a training job: a checkpoint is resumed only by the same job. ``world`` (the
        number of processes) is part of it: it sets the global batch. The runtime settings
        (eyelip.params.core.RUNTIME) are not: they change how fast, never what."""
        job = self.model_dump(exclude={"runtime"})
        return hashlib.sha1(json.dumps([job, data_version, world], sort_keys=True).encode()).hexdigest()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError("runtime.device: cuda requested but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware runs it natively (CUDA, or CPUs with AVX512-BF16/AMX:
    faster training: benchmarks/train_throughput.py); fp32 elsewhere, where emulated bf16 would be slower."""
    if precision == "fp32":
        return None
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "bf16" and not native:
        raise ParamError(f"train.precision: bf16 is not supported natively on this {device.type}; use auto or fp32")
    return torch.bfloat16 if native else None


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up, then constant or cosine decay to 1% of the peak LR."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True
        )
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class Epoch:
    """Loss and confusion totals of one pass over a split."""

    meter: ConfusionMeter
    totals: dict[str, float] = field(default_factory=dict)
    images: int = 0

    def add(self, components: dict[str, torch.Tensor], total: torch.Tensor, n: int) -> None:
        for key, value in {"loss": total.detach(), **components}.items():
            self.totals[key] = self.totals.get(key, 0.0) + float(value) * n
        self.images += n

    def row(self, prefix: str, combined: bool, dist: Dist = SINGLE) -> dict[str, float]:
        """Pooled IoU and mean losses over the images of every rank (sums all-reduced under DDP)."""
        counts = dist.all_sum(self.meter.counts().sum(0))
        keys = sorted(self.totals)
        sums = dist.all_sum(torch.tensor([self.images] + [self.totals[k] for k in keys], dtype=torch.float64))
        images, totals = sums[0].item(), dict(zip(keys, sums[1:].tolist()))
        out = {f"{prefix}_iou": iou(counts).mean().item(), f"{prefix}_jaccard_loss": totals["jaccard_loss"] / images}
        if combined:
            out[f"{prefix}_loss"] = totals["loss"] / images
        if "aux_loss" in totals:
            out[f"{prefix}_aux_loss"] = totals["aux_loss"] / images
        return out


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        arrays: ResizedArrays,
        train_rows: np.ndarray,
        val_rows: np.ndarray,
        targets: list[str],
        flip_pairs: list[tuple[int, int]] | None = None,
        dist: Dist = SINGLE,
        aux_targets: list[str] | None = None,
    ) -> None:
        self.cfg, self.arrays, self.targets, self.dist = cfg, arrays, targets, dist
        self.channels = len(targets) + len(aux_targets or [])  # model outputs: targets, then auxiliary targets
        self.train_rows, self.val_rows = train_rows, val_rows
        if cfg.runtime.threads:
            torch.set_num_threads(cfg.runtime.threads)
        self.device = pick_device(cfg.runtime.device)
        torch.manual_seed(cfg.seed)
        try:  # params that only the data can refute (model.prior_gate without prior channels)
            self.model = build_model(
                cfg.model,
                out_channels=self.channels,
                in_channels=arrays.spec.input_channels,
                input_scale=arrays.spec.input_scale,
                output_scale=arrays.spec.train_scale,
            )
        except ValueError as exc:
            raise ParamError(str(exc)) from exc
        self.model = self.model.to(self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        # self.model is saved and evaluated; self.net (DDP and/or compiled around it) is trained.
        self.model, self.net = dist.wrap(self.model)
        if cfg.runtime.compile:
            self.net = torch.compile(self.net)
        # The loss always reports the Jaccard term, whatever its weight, so val_jaccard_loss exists.
        self.criterion: CombinedLoss = build_loss(cfg.loss).to(self.device)
        self.jaccard_only = set(self.criterion.weights) == {"jaccard"} and self.channels == len(targets)
        self.augment = Augment(cfg.augment, flip_pairs or ())
        self.optimizer = make_optimizer(cfg, self.model)
        self.ema = WeightAverage(self.model, cfg.ema) if cfg.ema else None
        # The model that is validated, checkpointed as the best and exported.
        self.scored = self.ema.model if self.ema else self.model
        self.steps_per_epoch = math.ceil(math.ceil(len(train_rows) / dist.world) / cfg.batch_size)
        total, warmup = cfg.epochs * self.steps_per_epoch, round(cfg.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total, warmup, cfg.schedule)
        )
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        # Each rank its own augmentation stream; rank 0's is the single-process one.
        self.aug_rng = torch.Generator().manual_seed(cfg.seed + 1 + 1000 * dist.rank)
        dtype = autocast_dtype(cfg.precision, self.device)
        self.autocast = torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"val_iou": -1.0, "epoch": 0}

    def _to(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def _losses(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and its logged parts; ``jaccard_loss`` is the targets' alone."""
        logits, n = logits.float(), len(self.targets)
        total, components = self.criterion(logits[:, :n], y[:, :n])
        if "jaccard_loss" not in components:
            components["jaccard_loss"] = self.criterion.jaccard(logits[:, :n], y[:, :n]).detach()
        if self.channels > n:
            aux, _ = self.criterion(logits[:, n:], y[:, n:])
            components["aux_loss"] = aux.detach()
            total = total + self.cfg.aux_weight * aux
        return total, components

    def _count(self, meter: ConfusionMeter, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Confusion counts of the targets' channels: auxiliary targets are never scored."""
        n = len(self.targets)
        meter.update(torch.sigmoid(logits.detach()[:, :n].float()), y[:, :n])

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        stats = Epoch(ConfusionMeter())
        batches = self.arrays.batches(self.dist.shard(self.train_rows, self.shuffle), self.cfg.batch_size, train=True)
        bar = tqdm(
            batches,
            total=self.steps_per_epoch,
            desc=f"epoch {epoch}/{self.cfg.epochs}",
            unit="batch",
            leave=False,
            mininterval=1.0,
            disable=not self.dist.main,
        )
        for x, y in bar:
            x, y = self.augment(*self._to(x, y), self.aug_rng)
            x = x.contiguous(memory_format=torch.channels_last)  # a no-op unless train.augment.crop copied it
            with self.autocast:
                logits = self.net(x)  # in training mode at the training targets' size (resize.train_scale)
            loss, components = self._losses(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self.ema:
                self.ema.update(self.model)
            self._count(stats.meter, logits, y)
            stats.add(components, loss, len(x))
            bar.set_postfix(loss=f"{stats.totals['loss'] / stats.images:.4f}", refresh=False)
        return stats.row("train", not self.jaccard_only, self.dist)

    @torch.no_grad()
    def evaluate(self, rows: np.ndarray, model: torch.nn.Module | None = None) -> dict[str, float]:
        """Val metrics of ``model`` (default: the scored one) over ``rows``, each rank scoring its
        share with the plain model (no DDP collectives per batch, so ranks may run different batch
        counts)."""
        model = self.scored if model is None else model
        model.eval()
        stats = Epoch(ConfusionMeter())
        for x, y in self.arrays.batches(self.dist.part(rows), self.cfg.batch_size * 2):
            x, y = self._to(x, y)
            with self.autocast:
                logits = model(x)
            loss, components = self._losses(logits, y)
            self._count(stats.meter, logits, y)
            stats.add(components, loss, len(x))
        return stats.row("val", not self.jaccard_only, self.dist)

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "shuffle": self.shuffle.get_state(),
            "aug_rng": self.aug_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "best": self.best,
            "ema": self.ema.state_dict() if self.ema else None,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.shuffle.set_state(state["shuffle"])
        self.aug_rng.set_state(state["aug_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.history, self.best = state["history"], state["best"]
        if self.ema:
            self.ema.load_state_dict(state["ema"])


def build_trainer(
    cfg: TrainConfig, arrays: ResizedArrays, train_rows: np.ndarray, val_rows: np.ndarray, dist: Dist = SINGLE
) -> tuple[ModelSpec, Trainer]:
    """The model's contract (``arrays.spec``'s layout and ``cfg.model``) and a ``Trainer`` on its targets
    and auxiliary targets, as ``fit`` trains them."""
    spec = ModelSpec.of(arrays.spec, cfg.model)
    try:  # left/right targets swap channels when the image is flipped
        pairs = mirror_pairs({**spec.target_parts, **spec.aux_targets}) if cfg.augment.hflip else []
    except ValueError as exc:
        raise ParamError(str(exc)) from exc
    return spec, Trainer(cfg, arrays, train_rows, val_rows, spec.targets, pairs, dist, list(spec.aux_targets))


def fit(
    cfg: TrainConfig,
    arrays: ResizedArrays,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    model_path: Path,
    resume_path: Path,
    fingerprint: str,
    on_epoch: Callable[[dict[str, float]], None] = lambda row: None,
    on_start: Callable[[str | None], str | None] = lambda run_id: run_id,
    dist: Dist = SINGLE,
) -> dict[str, Any]:
    """Train on the targets and auxiliary targets of ``arrays.spec``, resuming from ``resume_path``
    when it holds an unfinished run of the same job (``fingerprint``).

    ``on_start`` receives the resumed run's tracking id (or None) and returns the id to store in the
    resume state. The best model is saved with its contract (``ModelSpec``: the data's layout and
    ``cfg.model``), the targets' outputs only. Returns a summary: best epoch and val IoU, final
    metrics, timing. Without validation faces (empty ``val_rows``) the last epoch is kept and
    ``best_val_iou`` is None. Under DDP (``dist``) every rank trains and gets the same global
    metrics; only rank 0 calls the callbacks and writes files.
    """
    # Without validation faces (split.val: 0) every non-test face trains and the last epoch is kept.
    validate = len(val_rows) > 0
    if not validate and cfg.patience:
        raise ParamError("train.patience: early stopping needs validation faces; set split.val > 0 or patience: 0")
    spec, trainer = build_trainer(cfg, arrays, train_rows, val_rows, dist)
    run_id, best_model = None, None
    if resume_path.exists():
        try:
            resume = Resume.load(resume_path, trainer.device)
        except DataError as exc:
            resume = None
            if dist.main:
                print(f"not resuming: {exc}; training from the start")
        if resume is not None and resume.fingerprint == fingerprint and not resume.finished:
            trainer.load_state(resume.trainer)
            run_id, best_model = resume.run_id, resume.best_model
            if dist.main:
                print(f"resuming from {resume_path} after epoch {len(trainer.history)}")
                # `dvc repro` deletes the stage's outputs before it runs: if no later epoch beats the
                # best one before the interruption, its model must still be there at the end.
                if best_model is not None and not model_path.exists():
                    write_model_file(model_path, best_model)
    if dist.main:
        run_id = on_start(run_id)
    stop = False
    train_seconds, seen = 0.0, 0
    for epoch in range(len(trainer.history) + 1, cfg.epochs + 1):
        tic = time.perf_counter()
        row = {"epoch": epoch, **trainer.train_epoch(epoch)}
        train_seconds += time.perf_counter() - tic
        seen += len(train_rows)
        if validate:
            row.update(trainer.evaluate(val_rows))
            if trainer.ema and cfg.val_raw:  # what the average adds, on the same faces (one more pass)
                row["val_iou_raw"] = trainer.evaluate(val_rows, trainer.model)["val_iou"]
        row["lr"] = trainer.scheduler.get_last_lr()[0]
        row["seconds"] = round(time.perf_counter() - tic, 2)
        trainer.history.append(row)
        if not validate or row["val_iou"] > trainer.best["val_iou"]:
            trainer.best = {"val_iou": row.get("val_iou"), "epoch": epoch}
            if dist.main:
                best_model = model_file(trainer.scored, spec, epoch, row.get("val_iou"))
                write_model_file(model_path, best_model)
        since_best = epoch - trainer.best["epoch"]
        stop = bool(cfg.patience) and since_best >= cfg.patience  # the same on every rank: val_iou is global
        if dist.main:
            Resume(fingerprint, run_id, stop or epoch == cfg.epochs, trainer.state(), best_model).save(resume_path)
            on_epoch(row)
            print(
                f"epoch {epoch}/{cfg.epochs}: "
                + "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds", "lr"))
                + f"  ({row['seconds']:.0f}s)"
            )
            if stop:
                print(f"early stop: val_iou has not improved for {cfg.patience} epochs")
        if stop:
            break
    return {
        "best_epoch": trainer.best["epoch"],
        "best_val_iou": trainer.best["val_iou"],
        "epochs_run": len(trainer.history),
        "early_stopped": stop,
        "final": {k: v for k, v in trainer.history[-1].items() if k not in ("epoch", "seconds")},
        "train_images_per_second": round(seen / train_seconds, 1) if seen else None,
        # Wall time of all epochs (training + validation), resumed ones included: the training budget.
        "train_minutes": round(sum(row["seconds"] for row in trainer.history) / 60, 2),
        "history": trainer.history,
        "run_id": run_id,
    }
