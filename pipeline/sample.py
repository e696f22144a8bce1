"""Stage `sample`: generate the built-in synthetic sample (a CelebAMask-HQ-layout zip)."""

from eyelip import params as P
from eyelip import stage
from eyelip.data.synthetic import generate_sample

OUT = "data/sample.zip"


def main(params: dict) -> None:
    generate_sample(OUT, n=P.integer(params, "sample.n", minimum=1), seed=P.integer(params, "sample.seed"),
                    image_size=P.integer(params, "sample.image_size", minimum=16),
                    mask_size=P.integer(params, "sample.mask_size", minimum=16),
                    n_jobs=stage.workers(params)["n_jobs"])
    print(f"wrote {OUT}")


if __name__ == "__main__":
    stage.run("sample", main)
