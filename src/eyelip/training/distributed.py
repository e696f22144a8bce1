"""Training on several processes: torchrun + DistributedDataParallel (NCCL on GPUs, gloo on CPU).

``torchrun --nproc_per_node=N pipeline/train.py`` starts N copies of the stage (``train.nproc: N``
makes the stage re-launch itself that way, so ``dvc repro`` needs no other command). Each copy
calls :func:`init`; without torchrun (``WORLD_SIZE`` unset or 1) it returns :data:`SINGLE` and
training runs exactly as in one process.

Sharding follows ``torch.utils.data.DistributedSampler``: every rank draws the same seeded
permutation of the training rows, pads it to a multiple of N by wrapping around, and keeps every
N-th row from its rank on. Rank r's k-th batch is then the r-th stride of the single-process batch
k at ``batch_size * N``: ``train.batch_size`` is **per rank**, the global batch is N times larger.
Validation is sharded the same way without padding. Epoch metrics are sums (confusion counts, loss
x images) all-reduced over the ranks, so ``val_iou`` is the global value on every rank. Only rank
0 (:attr:`Dist.main`) logs to MLflow and writes files.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as td
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from eyelip.errors import DataError, ParamError


def launched() -> bool:
    """True inside a torchrun job of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def relaunch(nproc: int, script: str) -> int:
    """Run ``script`` under torchrun with ``nproc`` local processes; returns its exit status."""
    return subprocess.call(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", script]
    )


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; the defaults are the single-process job."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives run

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """This rank's rows of the epoch's seeded permutation (the whole permutation in one process)."""
        order = rows[torch.randperm(len(rows), generator=generator).numpy()]
        if self.world == 1:
            return order
        # Padded so that every rank runs the same number of steps: DDP's all-reduces must pair up.
        return np.resize(order, math.ceil(len(order) / self.world) * self.world)[self.rank :: self.world]

    def part(self, rows: np.ndarray) -> np.ndarray:
        """This rank's share of an evaluation set: no padding, every row counted once."""
        if len(rows) < self.world:
            raise DataError(f"{len(rows)} validation images for {self.world} processes; use fewer processes")
        return rows[self.rank :: self.world]

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over all ranks (``tensor`` itself in one process)."""
        if self.world == 1:
            return tensor
        total = tensor.to(self.device, copy=True)  # NCCL reduces CUDA tensors only
        td.all_reduce(total)
        return total.to(tensor.device)

    def wrap(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(the model to save and evaluate, the module to train with)."""
        if self.world == 1:
            return model, model
        if self.device.type == "cuda":
            # Batch statistics over the global batch, as in one process (SyncBatchNorm is CUDA-only;
            # on CPU each rank normalises with its own batch's statistics).
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return model, DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.world > 1:
            td.destroy_process_group()


SINGLE = Dist()


def init(mode: str | bool, device: str) -> Dist:
    """Join torchrun's process group when launched by it (``runtime.distributed: auto``)."""
    if not launched():
        return SINGLE
    if mode is False:
        raise ParamError(
            f"runtime.distributed: false, but torchrun started {os.environ['WORLD_SIZE']} processes, "
            "which would each write the outputs; set it to auto or run without torchrun"
        )
    local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ParamError(
                f"{local_world} processes per node but {torch.cuda.device_count()} GPUs; "
                "use one process per GPU (train.nproc or torchrun --nproc-per-node)"
            )
        torch.cuda.set_device(local_rank)
    else:
        # torchrun sets OMP_NUM_THREADS=1; share the cores instead (runtime.threads overrides).
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_world))
    td.init_process_group("nccl" if cuda else "gloo")
    return Dist(td.get_rank(), td.get_world_size(), torch.device("cuda", local_rank) if cuda else torch.device("cpu"))
