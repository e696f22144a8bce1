"""The built-in synthetic sample: reproducible, in CelebAMask-HQ's layout, and realistic enough."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eyelip.data.layout import PARTS
from eyelip.data.synthetic import ZIP_ROOT, generate_sample, render_face

N = 48
TARGET = ("l_eye", "r_eye", "u_lip", "l_lip")
MASK_RE = re.compile(rf"{ZIP_ROOT}/CelebAMask-HQ-mask-anno/(\d+)/(\d{{5}})_(\w+)\.png")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "sample.zip"
    generate_sample(out, n=N, seed=0, image_size=128, mask_size=128, n_jobs=1)
    return out


def _masks(zf: zipfile.ZipFile) -> dict[int, dict[str, str]]:
    by_id: dict[int, dict[str, str]] = {}
    for name in zf.namelist():
        if m := MASK_RE.fullmatch(name):
            folder, sid, part = int(m[1]), int(m[2]), m[3]
            assert folder == sid // 2000 and part in PARTS
            by_id.setdefault(sid, {})[part] = name
    return by_id


def test_same_seed_same_bytes_for_any_n_jobs(sample: Path, tmp_path: Path) -> None:
    other = tmp_path / "par.zip"
    generate_sample(other, n=N, seed=0, image_size=128, mask_size=128, n_jobs=2)
    assert other.read_bytes() == sample.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["par.zip"]  # no temp file left behind
    generate_sample(other, n=4, seed=1, image_size=128, mask_size=128)
    assert other.read_bytes() != sample.read_bytes()


def test_layout_and_sizes(tmp_path: Path) -> None:
    out = tmp_path / "s.zip"
    generate_sample(out, n=3, seed=5, image_size=96, mask_size=64)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert all(n.startswith(f"{ZIP_ROOT}/") for n in names)
        assert all(
            i.compress_type == zipfile.ZIP_STORED and i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist()
        )
        for sid in range(3):
            img = Image.open(io.BytesIO(zf.read(f"{ZIP_ROOT}/CelebA-HQ-img/{sid}.jpg")))
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (96, 96))
        masks = _masks(zf)
        assert sorted(masks) == [0, 1, 2]
        for parts in masks.values():
            for name in parts.values():
                m = Image.open(io.BytesIO(zf.read(name)))
                assert (m.format, m.mode, m.size) == ("PNG", "L", (64, 64))
                assert set(np.unique(np.asarray(m))) <= {0, 255} and np.asarray(m).max() == 255


def test_every_part_appears_and_some_eye_is_hidden(sample: Path) -> None:
    with zipfile.ZipFile(sample) as zf:
        masks = _masks(zf)
    assert sorted(masks) == list(range(N))
    seen = set().union(*masks.values())
    assert seen == set(PARTS)
    assert any("l_eye" not in p or "r_eye" not in p for p in masks.values())
    assert all({"skin", "nose", "u_lip", "l_lip"} <= set(p) for p in masks.values())
    assert sum("mouth" in p for p in masks.values()) >= N // 5  # open mouths
    # Most faces have both eyes, as in the real data (~4% lack one).
    assert sum("l_eye" in p and "r_eye" in p for p in masks.values()) >= 0.8 * N


def test_eyes_and_lips_fraction_is_realistic(sample: Path) -> None:
    fracs = []
    with zipfile.ZipFile(sample) as zf:
        for parts in _masks(zf).values():
            target = np.zeros((128, 128), bool)
            for part in TARGET:
                if part in parts:
                    target |= np.asarray(Image.open(io.BytesIO(zf.read(parts[part])))) > 0
            fracs.append(target.mean() * 100)
    # Real CelebAMask-HQ: 0.24%..2.74% of the image, median 1.5%.
    assert 0.8 < np.median(fracs) < 2.2
    assert 0.2 < min(fracs) and max(fracs) < 4.0


def test_render_face_shapes_and_determinism() -> None:
    img, masks = render_face(np.random.default_rng([3, 7]), 64, 32)
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    assert all(m.dtype == bool and m.shape == (32, 32) and m.any() for m in masks.values())
    img2, masks2 = render_face(np.random.default_rng([3, 7]), 64, 32)
    assert np.array_equal(img, img2) and masks.keys() == masks2.keys()
