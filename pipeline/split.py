"""Stage `split`: seeded train/val/test id lists in data/split/ (or one fold of a k-fold split)."""

from eyelip import atomic, stage
from eyelip import params as P
from eyelip.data.arrays import read_ids
from eyelip.data.split import fold_split, split_counts, split_ids, write_split


def main(params: dict) -> None:
    ids = read_ids("data/resized/ids.txt")
    sizes = P.section(params, "split", ("seed", "train", "val", "test", "folds", "fold"))
    seed, folds = P.integer(params, "split.seed"), P.integer(params, "split.folds", minimum=0, default=0)
    if folds:
        fold = P.integer(params, "split.fold", default=0)
        splits = fold_split(ids, folds, fold, sizes.get("val"), seed)
        counts = {name: len(split) for name, split in splits.items()}
        where = f" (test = fold {fold} of {folds})"
    else:
        counts = split_counts(sizes, len(ids))
        splits, where = split_ids(ids, counts, seed), ""
    write_split(splits, "data/split")
    atomic.write_json("metrics/split.json", counts)
    print("split " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" of {len(ids)} samples{where}")


if __name__ == "__main__":
    stage.run("split", main)
