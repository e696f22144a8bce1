"""Stage `sample`: generate the built-in synthetic sample (a CelebAMask-HQ-layout zip).

Built only when data.root is the sample: DVC runs every stage of dvc.yaml, and its output must exist
afterwards, so for other data this writes an empty data/sample.zip (no stage reads it) in a second.
"""

from pathlib import Path

from eyelip import atomic, stage
from eyelip import params as P
from eyelip.data.synthetic import generate_sample

OUT = "data/sample.zip"


def main(params: dict) -> None:
    root = P.get(params, "data.root")
    if Path(root) != Path(OUT):
        atomic.write_text(OUT, "")
        print(f"data.root is {root}: the built-in sample is not needed, {OUT} left empty")
        return
    generate_sample(OUT, n=P.integer(params, "sample.n", minimum=1), seed=P.integer(params, "sample.seed"),
                    image_size=P.integer(params, "sample.image_size", minimum=16),
                    mask_size=P.integer(params, "sample.mask_size", minimum=16),
                    n_jobs=stage.workers(params)["n_jobs"])
    print(f"wrote {OUT}")


if __name__ == "__main__":
    stage.run("sample", main)
