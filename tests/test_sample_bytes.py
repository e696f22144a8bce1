"""The built-in sample is byte-identical wherever it is built: `dvc.lock` records its md5, and a clone
whose `sample` stage gives other bytes sees every later stage as changed and `eyelip report --baseline`
calls its runs "not comparable (different data)".

NumPy picks its SIMD loops by CPU: a fresh install on an AVX-512 machine and one on an AVX2 machine
used to differ in 3 pixel values of one JPEG (face 255), from float32 ``** 1.5`` in the renderer. Each
build here runs in its own process with NumPy's dispatched loops switched off (baseline SIMD only), the
other end from the AVX-512 loops a developer's machine may use."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, copy_project

from eyelip.data.synthetic import _encode_sample

# Face 255 at 512 px is the one that differed; the others are there so the check is not about one face.
FACES = (0, 7, 255)


def baseline_simd_env() -> dict[str, str]:
    """The environment of a process whose NumPy runs only its baseline loops (as on an older CPU)."""
    found = np.show_config(mode="dicts")["SIMD Extensions"]["found"]
    return {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(found)}


def test_faces_encode_the_same_without_numpy_simd_dispatch(tmp_path: Path) -> None:
    script = (
        "import hashlib, sys\nfrom eyelip.data.synthetic import _encode_sample\n"
        f"for i in {FACES}:\n"
        "    jpg, pngs = _encode_sample(i, seed=0, image_size=512, mask_size=512)\n"
        "    print(hashlib.md5(jpg + b''.join(p for _, p in pngs)).hexdigest())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=baseline_simd_env(), capture_output=True, text=True, check=True
    )
    here = []
    for i in FACES:
        jpg, pngs = _encode_sample(i, seed=0, image_size=512, mask_size=512)
        here.append(hashlib.md5(jpg + b"".join(p for _, p in pngs)).hexdigest())
    assert proc.stdout.split() == here


@pytest.mark.slow
def test_the_sample_stage_rebuilds_dvc_locks_bytes(tmp_path: Path) -> None:
    """The `sample` stage's own script in a fresh process and a copy of the project, as a clone runs it."""
    root = tmp_path / "clone"
    copy_project(root)
    subprocess.run(
        [sys.executable, "pipeline/sample.py"],
        cwd=root,
        env=baseline_simd_env(),
        check=True,
        capture_output=True,
        timeout=1800,
    )
    (locked,) = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]["sample"]["outs"]
    built = root / locked["path"]
    built_hash = (hashlib.md5(built.read_bytes()).hexdigest(), built.stat().st_size)
    assert built_hash == (locked["md5"], locked["size"]), (
        "data/sample.zip differs from dvc.lock: if the generator changed on purpose, `dvc repro` and commit dvc.lock"
    )
