"""Figures people would rather look at than read: training curves (PNG, via matplotlib)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402

from eyelip import atomic  # noqa: E402


def rows_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of equal-keyed rows: the tables DVC draws as plots."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def training_curves(history: Sequence[dict[str, float]], path: str | Path, best_epoch: int | None = None) -> None:
    """IoU and loss per epoch, train vs val, the best epoch marked."""
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, metric, title in ((left, "iou", "IoU (threshold 0.5)"), (right, "jaccard_loss", "Jaccard loss")):
        for split, style in (("train", "--"), ("val", "-")):
            if f"{split}_{metric}" in history[0]:  # no val curves when training without validation faces
                axis.plot(epochs, [row[f"{split}_{metric}"] for row in history], style, marker="o", ms=3, label=split)
        if best_epoch:
            axis.axvline(best_epoch, color="grey", lw=0.8, ls=":", label=f"best epoch {best_epoch}")
        axis.set(title=title, xlabel="epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    save_figure(fig, path)
