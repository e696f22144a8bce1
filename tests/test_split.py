from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from eyelip.data.arrays import ids_text, read_ids
from eyelip.data.split import fold_split, split_counts, split_ids
from eyelip.errors import ParamError


def test_counts_and_fractions() -> None:
    assert split_counts({"train": 8100, "val": 900, "test": 1000}, 30000) == {"train": 8100, "val": 900, "test": 1000}
    assert split_counts({"train": 0.8, "val": 0.1, "test": 0.1}, 504) == {"train": 403, "val": 50, "test": 50}


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"train": 8100, "val": 900, "test": 1000}, r"train 8100 \+ val 900 \+ test 1000 = 10000 > 504 samples"),
        ({"train": 0.8, "val": 100, "test": 0.1}, r"all as counts .* or all as fractions"),
        ({"train": -5, "val": 1, "test": 1}, r"split.train: expected a count"),
        ({"train": 0.9, "val": 0.1, "test": 0.1}, r"fractions train\+val\+test = 1.1 > 1"),
    ],
)
def test_bad_sizes_are_named(sizes: dict, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        split_counts(sizes, 504)


def test_split_is_seeded_disjoint_and_complete() -> None:
    ids = list(range(100))
    counts = {"train": 80, "val": 10, "test": 10}
    a, b, c = split_ids(ids, counts, 0), split_ids(ids, counts, 0), split_ids(ids, counts, 1)
    assert a == b and a != c
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert {k: len(v) for k, v in a.items()} == counts


def test_folds_are_disjoint_cover_all_ids_and_are_seeded() -> None:
    ids = list(range(1000, 1504))
    splits = [fold_split(ids, 5, k, 0.1, seed=0) for k in range(5)]
    tests = [s["test"] for s in splits]
    assert sorted(i for t in tests for i in t) == ids, "every id is tested exactly once"
    assert {len(t) for t in tests} == {100, 101}
    for s in splits:
        assert set(s["train"]).isdisjoint(s["val"]) and set(s["train"] + s["val"]).isdisjoint(s["test"])
        assert sorted(s["train"] + s["val"] + s["test"]) == ids
        assert len(s["val"]) == round(0.1 * (504 - len(s["test"])))
    assert fold_split(ids, 5, 2, 0.1, seed=0) == splits[2]
    assert fold_split(ids, 5, 2, 0.1, seed=1) != splits[2]
    assert len(fold_split(ids, 5, 0, 30, seed=0)["val"]) == 30
    no_val = fold_split(ids, 5, 0, 0.0, seed=0)  # split.val: 0: every non-test id trains
    assert no_val["val"] == [] and sorted(no_val["train"]) == sorted(splits[0]["train"] + splits[0]["val"])


@pytest.mark.parametrize(
    "folds, fold, val, message",
    [
        (1, 0, 0.1, r"split.folds: expected 0 \(off\) or 2..504"),
        (5, 5, 0.1, r"split.fold: expected a fold index 0..4, got 5"),
        (5, 0, 1.5, r"split.val: with folds"),
        (5, 0, 403, r"split.val: 403 validation ids leave no training ids"),
    ],
)
def test_bad_fold_params_are_named(folds: int, fold: int, val: int | float, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        fold_split(list(range(504)), folds, fold, val, seed=0)


def test_split_stage_writes_the_requested_fold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("split_stage", Path(__file__).parents[1] / "pipeline" / "split.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "resized").mkdir(parents=True)
    (tmp_path / "data" / "resized" / "ids.txt").write_text(ids_text(list(range(50))))
    stage.main(
        stage.Params.model_validate({"split": {"seed": 0, "train": 0.8, "val": 5, "test": 0.1, "folds": 5, "fold": 3}})
    )
    written = {name: read_ids(tmp_path / "data" / "split" / f"{name}.txt") for name in ("train", "val", "test")}
    assert written == fold_split(list(range(50)), 5, 3, 5, seed=0)
    assert json.loads((tmp_path / "metrics" / "split.json").read_text()) == {"train": 35, "val": 5, "test": 10}
