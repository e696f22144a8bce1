"""Stage `fuse-masks`: part PNGs -> one bit-packed mask channel per target, then per auxiliary
target (data/fused/)."""

from eyelip import atomic, stage
from eyelip.data.fuse import fuse_dataset
from eyelip.data.source import Source
from eyelip.params import Params


def main(params: Params) -> None:
    data = params.data
    summary = fuse_dataset(
        Source(data.root),
        "data/fused",
        data.targets,
        rule=data.rule,
        on_error=data.on_error,
        aux_targets=data.aux_targets,
        **stage.workers(params.runtime),
    )
    atomic.write_json("metrics/fuse-masks.json", summary)
    print(f"fused {summary['samples']} samples ({summary['skipped']} skipped) into data/fused/")


if __name__ == "__main__":
    stage.run("fuse-masks", main)
