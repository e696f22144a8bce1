"""Stage `sample`: generate the built-in synthetic sample (a CelebAMask-HQ-layout zip)."""

from eyelip import stage
from eyelip.params import Params
from eyelip.data.synthetic import generate_sample

OUT = "data/sample.zip"


def main(params: Params) -> None:
    sample = params.sample
    generate_sample(OUT, n=sample.n, seed=sample.seed, image_size=sample.image_size, mask_size=sample.mask_size,
                    n_jobs=params.runtime.n_jobs)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    stage.run("sample", main)
