"""Stage `resize`: images and fused masks -> data/resized/{images,masks}.npy at resize.size."""

from eyelip import atomic
from eyelip import params as P
from eyelip import stage
from eyelip.parallel import ON_ERROR
from eyelip.resize import resize_dataset
from eyelip.source import Source


def main(params: dict) -> None:
    summary = resize_dataset(Source(P.get(params, "data.root")), "data/fused", "data/resized",
                             size=P.integer(params, "resize.size", minimum=8),
                             on_error=P.choice(params, "data.on_error", ON_ERROR), **stage.workers(params))
    atomic.write_json("metrics/resize.json", summary)
    print(f"resized {summary['samples']} samples ({summary['skipped']} skipped) into data/resized/")


if __name__ == "__main__":
    stage.run("resize", main)
