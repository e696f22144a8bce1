from __future__ import annotations

import pytest

from eyelip.errors import ParamError
from eyelip.split import split_counts, split_ids


def test_counts_and_fractions() -> None:
    assert split_counts({"train": 8100, "val": 900, "test": 1000}, 30000) == {"train": 8100, "val": 900, "test": 1000}
    assert split_counts({"train": 0.8, "val": 0.1, "test": 0.1}, 504) == {"train": 403, "val": 50, "test": 50}


@pytest.mark.parametrize("sizes, message", [
    ({"train": 8100, "val": 900, "test": 1000}, r"train 8100 \+ val 900 \+ test 1000 = 10000 > 504 samples"),
    ({"train": 0.8, "val": 100, "test": 0.1}, r"all as counts .* or all as fractions"),
    ({"train": -5, "val": 1, "test": 1}, r"split.train: expected a count"),
    ({"train": 0.9, "val": 0.1, "test": 0.1}, r"fractions train\+val\+test = 1.1 > 1"),
])
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
