"""Seeded random train/val/test split of the sample ids, or one fold of a k-fold split.

Sizes are all counts (the reference notebook's full-data setup: 8100 / 900 / 1000) or all fractions of the
dataset (e.g. 0.8 / 0.1 / 0.1). Each list is written sorted, so diffs between runs are readable.

With ``split.folds`` = k >= 2 (cross-validation on a small set), the seeded permutation is cut
into k near-equal folds: test is fold ``split.fold``, val is ``split.val`` (a count, or a share
of the remaining ids) and train is the rest; ``split.train`` and ``split.test`` are not used.
Sweeping ``split.fold`` over 0..k-1 tests every id exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from eyelip import atomic
from eyelip.data.arrays import ids_text
from eyelip.errors import ParamError

SPLITS = ("train", "val", "test")


def split_counts(sizes: Mapping[str, int | float], n: int) -> dict[str, int]:
    """Counts per split from ``split.{train,val,test}`` given ``n`` samples."""
    values = {name: sizes.get(name) for name in SPLITS}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ParamError(f"split.{name}: expected a count (e.g. 8100) or a fraction (e.g. 0.8), got {value!r}")
    if all(isinstance(v, int) for v in values.values()):
        counts = dict(values)
    elif all(isinstance(v, float) for v in values.values()):
        if sum(values.values()) > 1 + 1e-9:
            raise ParamError(f"split: fractions train+val+test = {sum(values.values()):g} > 1")
        counts = {name: int(round(frac * n)) for name, frac in values.items()}
        counts["train"] = min(counts["train"], n - counts["val"] - counts["test"])
    else:
        raise ParamError("split: give train, val and test all as counts (8100) or all as fractions (0.8), not mixed")
    if counts["train"] < 1:
        raise ParamError(f"split.train: the training split would be empty ({n} samples, sizes {values})")
    total = sum(counts.values())
    if total > n:
        raise ParamError(
            f"split: train {counts['train']} + val {counts['val']} + test {counts['test']} = {total} "
            f"> {n} samples in the dataset; lower split.* in params.yaml or use fractions"
        )
    return counts


def fold_split(ids: Sequence[int], folds: int, fold: int, val: int | float, seed: int) -> dict[str, list[int]]:
    """Fold ``fold`` of ``folds`` as the test split; ``val`` ids of the rest (a count or a share)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2 or folds > len(ids):
        raise ParamError(f"split.folds: expected 0 (off) or 2..{len(ids)} folds, got {folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ParamError(f"split.fold: expected a fold index 0..{folds - 1}, got {fold!r}")
    order = np.random.default_rng(seed).permutation(len(ids))
    chunks = np.array_split(order, folds)
    # The rest keeps its permuted order, so its first n_val ids are a seeded random sample.
    rest = np.concatenate([c for k, c in enumerate(chunks) if k != fold])
    if isinstance(val, bool) or not isinstance(val, (int, float)) or val < 0 or (isinstance(val, float) and val >= 1):
        raise ParamError(
            f"split.val: with folds, expected a count (e.g. 50) or a share of the "
            f"non-test ids in [0, 1) (e.g. 0.1), got {val!r}"
        )
    n_val = val if isinstance(val, int) else int(round(val * len(rest)))
    if n_val >= len(rest):
        raise ParamError(f"split.val: {n_val} validation ids leave no training ids ({len(rest)} outside the test fold)")
    picked = {"test": chunks[fold], "val": rest[:n_val], "train": rest[n_val:]}
    return {name: sorted(ids[i] for i in picked[name]) for name in SPLITS}


def split_ids(ids: Sequence[int], counts: Mapping[str, int], seed: int) -> dict[str, list[int]]:
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    out: dict[str, list[int]] = {}
    start = 0
    for name in SPLITS:
        out[name] = sorted(shuffled[start : start + counts[name]])
        start += counts[name]
    return out


def write_split(splits: Mapping[str, list[int]], out_dir: str | Path) -> None:
    with atomic.atomic_path(out_dir, directory=True) as tmp:
        for name, ids in splits.items():
            (tmp / f"{name}.txt").write_text(ids_text(ids))
