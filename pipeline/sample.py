"""Stage `sample`: generate the built-in synthetic sample (a CelebAMask-HQ-layout zip).

Built only when data.root is the sample: DVC runs every stage of dvc.yaml, and its output must exist
afterwards, so for other data this writes an empty data/sample.zip (no stage reads it) in a second.
"""

from pathlib import Path

from eyelip import atomic, stage
from eyelip.data.synthetic import generate_sample
from eyelip.params.core import View
from eyelip.params.data import DataParams
from eyelip.params.runtime import RuntimeParams
from eyelip.params.sample import SampleParams

OUT = "data/sample.zip"


class Params(View):
    """The sections of params.yaml this stage reads."""

    sample: SampleParams = SampleParams()
    data: DataParams = DataParams()
    runtime: RuntimeParams = RuntimeParams()


def main(params: Params) -> None:
    root, sample = params.data.root, params.sample
    if Path(root) != Path(OUT):
        atomic.write_text(OUT, "")
        print(f"data.root is {root}: the built-in sample is not needed, {OUT} left empty")
        return
    generate_sample(
        OUT,
        n=sample.n,
        seed=sample.seed,
        image_size=sample.image_size,
        mask_size=sample.mask_size,
        n_jobs=params.runtime.n_jobs,
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    stage.run("sample", main, Params)
