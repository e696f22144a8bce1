"""Stage `split`: seeded train/val/test id lists in data/split/ (or one fold of a k-fold split)."""

from eyelip import atomic, stage
from eyelip.data.arrays import read_ids
from eyelip.data.split import fold_split, split_counts, split_ids, write_split
from eyelip.params.core import View
from eyelip.params.split import SplitParams


class Params(View):
    """The sections of params.yaml this stage reads."""

    split: SplitParams = SplitParams()


def main(params: Params) -> None:
    ids = read_ids("data/resized/ids.txt")
    split = params.split
    seed, folds, fold = split.seed, split.folds, split.fold
    if folds:
        splits = fold_split(ids, folds, fold, split.val, seed)
        counts = {name: len(split) for name, split in splits.items()}
        where = f" (test = fold {fold} of {folds})"
    else:
        counts = split_counts({"train": split.train, "val": split.val, "test": split.test}, len(ids))
        splits, where = split_ids(ids, counts, seed), ""
    write_split(splits, "data/split")
    atomic.write_json("metrics/split.json", counts)
    print("split " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" of {len(ids)} samples{where}")


if __name__ == "__main__":
    stage.run("split", main, Params)
