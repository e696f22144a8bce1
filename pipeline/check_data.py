"""Stage `check-data`: data.root is checked by the project before DVC hashes it.

The data stages depend on ``${data.root}``, so a missing path would otherwise stop `dvc repro` with
DVC's bare ``[Errno 2]`` before any script could explain it. This stage has no dep on that path and
runs first (fuse-masks depends on its output), so the project's message comes first. The built-in
sample is the `sample` stage's output: it may not exist yet, and DVC builds it before fuse-masks.
Writes data/check.json (the root as given, and its image count once it exists).
"""

from pathlib import Path

from eyelip import atomic, stage
from eyelip.data.source import Source
from eyelip.params import Params

SAMPLE = "data/sample.zip"  # stage `sample`'s output
OUT = "data/check.json"


def main(params: Params) -> None:
    root = params.data.root
    if Path(root) == Path(SAMPLE) and not Path(root).exists():
        atomic.write_json(OUT, {"root": root, "images": None})
        print(f"data.root: {root}, the built-in sample (stage `sample` builds it)")
        return
    images = len(Source(root).ids())  # a clear DataError when missing or not CelebAMask-HQ-shaped
    atomic.write_json(OUT, {"root": root, "images": images})
    print(f"data.root: {root}, {images} images")


if __name__ == "__main__":
    stage.run("check-data", main)
