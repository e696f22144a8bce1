"""Stage `split`: seeded train/val/test id lists in data/split/."""

from eyelip import atomic
from eyelip import params as P
from eyelip import stage
from eyelip.arrays import read_ids
from eyelip.split import split_counts, split_ids, write_split


def main(params: dict) -> None:
    ids = read_ids("data/resized/ids.txt")
    counts = split_counts(P.section(params, "split", ("seed", "train", "val", "test")), len(ids))
    write_split(split_ids(ids, counts, P.integer(params, "split.seed")), "data/split")
    atomic.write_json("metrics/split.json", counts)
    print("split " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" of {len(ids)} samples")


if __name__ == "__main__":
    stage.run("split", main)
