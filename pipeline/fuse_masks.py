"""Stage `fuse-masks`: part PNGs -> one bit-packed mask channel per target, then per auxiliary
target (data/fused/)."""

from eyelip import atomic, stage
from eyelip.data.fuse import fuse_dataset
from eyelip.data.source import Source
from eyelip.params.core import View
from eyelip.params.data import DataParams
from eyelip.params.runtime import RuntimeParams


class Params(View):
    """The sections of params.yaml this stage reads."""

    data: DataParams = DataParams()
    runtime: RuntimeParams = RuntimeParams()


def main(params: Params) -> None:
    data = params.data
    summary = fuse_dataset(
        Source(data.root),
        "data/fused",
        data.targets,
        rule=data.rule,
        on_error=data.on_error,
        aux_targets=data.aux_targets,
        **params.runtime.workers(),
    )
    atomic.write_json("metrics/fuse-masks.json", summary)
    print(f"fused {summary['samples']} samples ({summary['skipped']} skipped) into data/fused/")


if __name__ == "__main__":
    stage.run("fuse-masks", main, Params)
