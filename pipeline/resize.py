"""Stage `resize`: fused masks -> data/resized/masks.npy at resize.size (and train_masks.npy at
resize.size x resize.train_scale when that is > 1), images -> images.npy at resize.size x
resize.input_scale, with the channels of resize.prior after R, G, B."""

from eyelip import atomic, stage
from eyelip.data.resize import resize_dataset
from eyelip.data.source import Source
from eyelip.params.core import View
from eyelip.params.data import DataParams
from eyelip.params.resize import ResizeParams
from eyelip.params.runtime import RuntimeParams


class Params(View):
    """The sections of params.yaml this stage reads."""

    data: DataParams = DataParams()
    resize: ResizeParams = ResizeParams()
    runtime: RuntimeParams = RuntimeParams()


def main(params: Params) -> None:
    resize = params.resize
    summary = resize_dataset(
        Source(params.data.root),
        "data/fused",
        "data/resized",
        size=resize.size,
        input_scale=resize.input_scale,
        prior=resize.prior,
        train_scale=resize.train_scale,
        on_error=params.data.on_error,
        **params.runtime.workers(),
    )
    atomic.write_json("metrics/resize.json", summary)
    faces = f"; no face found in {summary['no_face']} (prior channels empty)" if "no_face" in summary else ""
    print(f"resized {summary['samples']} samples ({summary['skipped']} skipped{faces}) into data/resized/")


if __name__ == "__main__":
    stage.run("resize", main, Params)
