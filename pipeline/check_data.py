"""Stage `check-data`: the params file and data.root are checked before any stage does work.

The first stage of the pipeline (every other one depends on its output, the sample included), and it
depends on the whole of params.yaml: a wrong value in any section, even one no stage depends on
(``runtime:``, ``tracking:``), stops `dvc repro` here, in seconds, naming the key. ``stage.run`` loads
and validates the whole file (:class:`eyelip.params.whole.Params`; later stages validate only the
sections they read); this checks data.root, which the data stages depend on, so a missing path
would otherwise stop `dvc repro` with DVC's bare ``[Errno 2]`` before any script could explain it. The
built-in sample is not looked into: the `sample` stage (re)builds it after this one.
Writes data/check.json (the root as given, and its image count unless it is the sample).
"""

from pathlib import Path

from eyelip import atomic, stage
from eyelip.data.source import Source
from eyelip.params.whole import Params

SAMPLE = "data/sample.zip"  # stage `sample`'s output
OUT = "data/check.json"


def main(params: Params) -> None:
    root = params.data.root
    if Path(root) == Path(SAMPLE):
        atomic.write_json(OUT, {"root": root, "images": None})
        print(f"data.root: {root}, the built-in sample (stage `sample` builds it)")
        return
    images = len(Source(root).ids())  # a clear DataError when missing or not CelebAMask-HQ-shaped
    atomic.write_json(OUT, {"root": root, "images": images})
    print(f"data.root: {root}, {images} images")


if __name__ == "__main__":
    stage.run("check-data", main, Params)
