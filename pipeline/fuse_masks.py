"""Stage `fuse-masks`: part PNGs -> one bit-packed mask channel per target, then per auxiliary
target (data/fused/)."""

from eyelip import atomic, stage
from eyelip import params as P
from eyelip.data.fuse import RULES, fuse_dataset
from eyelip.data.parallel import ON_ERROR
from eyelip.data.source import Source


def main(params: dict) -> None:
    summary = fuse_dataset(Source(P.get(params, "data.root")), "data/fused", P.get(params, "data.targets"),
                           rule=P.choice(params, "data.rule", RULES),
                           on_error=P.choice(params, "data.on_error", ON_ERROR),
                           aux_targets=P.get(params, "data.aux_targets", {}), **stage.workers(params))
    atomic.write_json("metrics/fuse-masks.json", summary)
    print(f"fused {summary['samples']} samples ({summary['skipped']} skipped) into data/fused/")


if __name__ == "__main__":
    stage.run("fuse-masks", main)
