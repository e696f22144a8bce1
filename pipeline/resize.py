"""Stage `resize`: fused masks -> data/resized/masks.npy at resize.size (and train_masks.npy at
resize.size x resize.train_scale when that is > 1), images -> images.npy at resize.size x
resize.input_scale, with the channels of resize.prior after R, G, B."""

from eyelip import atomic, stage
from eyelip import params as P
from eyelip.data.parallel import ON_ERROR
from eyelip.data.prior import PRIORS
from eyelip.data.resize import resize_dataset
from eyelip.data.source import Source


def main(params: dict) -> None:
    summary = resize_dataset(Source(P.get(params, "data.root")), "data/fused", "data/resized",
                             size=P.integer(params, "resize.size", minimum=8),
                             input_scale=P.integer(params, "resize.input_scale", minimum=1, default=1),
                             prior=P.choice(params, "resize.prior", PRIORS, default="none"),
                             train_scale=P.integer(params, "resize.train_scale", minimum=1, default=1),
                             on_error=P.choice(params, "data.on_error", ON_ERROR), **stage.workers(params))
    atomic.write_json("metrics/resize.json", summary)
    faces = f"; no face found in {summary['no_face']} (prior channels empty)" if "no_face" in summary else ""
    print(f"resized {summary['samples']} samples ({summary['skipped']} skipped{faces}) into data/resized/")


if __name__ == "__main__":
    stage.run("resize", main)
