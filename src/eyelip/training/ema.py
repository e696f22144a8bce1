"""An exponential moving average (EMA) of a model's weights, the model that is validated and saved.

After every optimizer step each floating-point parameter and buffer (BatchNorm's running
statistics too) moves towards the trained model's: ``avg = d * avg + (1 - d) * weight``. The
decay ramps up as ``min(decay, (1 + step) / (10 + step))``, so the average is not held back by
the random initial weights. On a few hundred faces, small batches make the last weights jump from
step to step; their average is smoother, at the cost of one copy of the model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay, self.steps = decay, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for avg, new in zip(self.model.state_dict().values(), model.state_dict().values()):
            if avg.is_floating_point():
                avg.lerp_(new.detach(), 1.0 - d)
            else:  # e.g. BatchNorm's num_batches_tracked
                avg.copy_(new)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = state["steps"]
