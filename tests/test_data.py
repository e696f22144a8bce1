"""The data library on the synthetic faces: fusing, the zip reader, resizing rules and bad input."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SYNTHETIC_IDS, SYNTHETIC_MASK, SYNTHETIC_PHOTO, copy_samples
from PIL import Image

from eyelip import atomic
from eyelip.data.arrays import NpyRowWriter, read_ids
from eyelip.data.dataset import ResizedArrays
from eyelip.data.fuse import FusedMasks, check_targets, fuse, fuse_dataset
from eyelip.data.layout import mask_relpath
from eyelip.data.preprocess import decode_image, mask_coverage, resize_mask
from eyelip.data.resize import resize_dataset
from eyelip.data.source import Source
from eyelip.data.spec import DataSpec
from eyelip.errors import DataError, ParamError

EYES_LIPS = {"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}
TWO = {"eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}


def naive_union(root: Path, sample_id: int, parts: list[str]) -> np.ndarray:
    """Independent reference: OR of the part PNGs that exist, any non-zero value as foreground."""
    out = np.zeros((SYNTHETIC_MASK, SYNTHETIC_MASK), dtype=bool)
    for part in parts:
        path = root / mask_relpath(sample_id, part)
        if path.exists():
            out |= np.array(Image.open(path).convert("L")) > 0
    return out


def block_mean(masks: np.ndarray, size: int) -> np.ndarray:
    """Each channel's share of foreground in the k x k blocks that make one pixel at ``size``."""
    k = SYNTHETIC_MASK // size
    return masks.reshape(len(masks), size, k, size, k).mean(axis=(2, 4))


@pytest.mark.parametrize("targets", [EYES_LIPS, TWO], ids=["eyes_lips", "eyes+lips"])
def test_fused_masks_equal_independent_union(synthetic: Path, tmp_path: Path, targets: dict) -> None:
    summary = fuse_dataset(Source(synthetic), tmp_path / "fused", targets, n_jobs=2)
    fused = FusedMasks(tmp_path / "fused")
    assert summary["samples"] == len(fused) == len(SYNTHETIC_IDS) and summary["skipped"] == 0
    assert fused.ids == list(SYNTHETIC_IDS)
    missing_eye = [i for i in fused.ids if not (synthetic / mask_relpath(i, "l_eye")).exists()]
    assert missing_eye, "the synthetic faces have samples without l_eye (sunglasses, hair)"
    for sample_id in fused.ids:
        masks = fused[fused.ids.index(sample_id)]
        assert masks.shape == (len(targets), SYNTHETIC_MASK, SYNTHETIC_MASK)
        for channel, parts in enumerate(targets.values()):
            np.testing.assert_array_equal(
                masks[channel], naive_union(synthetic, sample_id, parts), err_msg=f"id {sample_id}"
            )


def test_fusing_is_identical_for_any_n_jobs(synthetic: Path, tmp_path: Path) -> None:
    fuse_dataset(Source(synthetic), tmp_path / "a", EYES_LIPS, n_jobs=1)
    fuse_dataset(Source(synthetic), tmp_path / "b", EYES_LIPS, n_jobs=2)
    assert (tmp_path / "a" / "masks.npy").read_bytes() == (tmp_path / "b" / "masks.npy").read_bytes()


def test_label_map_rule_lets_later_parts_cover_eyes() -> None:
    eye = np.zeros((4, 4), bool)
    eye[1, 1:3] = True
    hair = np.zeros((4, 4), bool)
    hair[1, 2] = True
    parts = {"l_eye": eye, "hair": hair}
    union = fuse(parts, {"e": ["l_eye"]}, "union", (4, 4))[0]
    label = fuse(parts, {"e": ["l_eye"]}, "label_map", (4, 4))[0]
    assert union.sum() == 2 and label.sum() == 1 and not label[1, 2]


def test_zip_reads_like_the_folder(synthetic: Path, tmp_path: Path) -> None:
    subset = copy_samples(synthetic, tmp_path / "CelebAMask-HQ", [0, 1, 2, 2000])
    archive = tmp_path / "CelebAMask-HQ.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # the official zip's top-level folder
        for path in sorted(subset.rglob("*")):
            zf.write(path, path.relative_to(tmp_path))
    fuse_dataset(Source(subset), tmp_path / "f1", TWO, n_jobs=1)
    fuse_dataset(Source(archive), tmp_path / "f2", TWO, n_jobs=1)
    assert read_ids(tmp_path / "f2" / "ids.txt") == [0, 1, 2, 2000]
    assert (tmp_path / "f1" / "masks.npy").read_bytes() == (tmp_path / "f2" / "masks.npy").read_bytes()
    resize_dataset(Source(subset), tmp_path / "f1", tmp_path / "r1", 64, n_jobs=1)
    resize_dataset(Source(archive), tmp_path / "f2", tmp_path / "r2", 64, n_jobs=1)
    for name in ("images.npy", "masks.npy"):
        assert (tmp_path / "r1" / name).read_bytes() == (tmp_path / "r2" / name).read_bytes()


def test_resized_arrays_follow_the_documented_rules(synthetic: Path, tmp_path: Path) -> None:
    subset = copy_samples(synthetic, tmp_path / "data", list(SYNTHETIC_PHOTO))  # a small and a large photo
    fuse_dataset(Source(subset), tmp_path / "fused", TWO, n_jobs=1)
    resize_dataset(Source(subset), tmp_path / "fused", tmp_path / "resized", 128, n_jobs=1)
    images = np.load(tmp_path / "resized" / "images.npy", mmap_mode="r")
    masks = np.load(tmp_path / "resized" / "masks.npy", mmap_mode="r")
    assert isinstance(images, np.memmap) and images.shape == (2, 128, 128, 3) and images.dtype == np.uint8
    assert masks.shape == (2, 2, 128, 128) and set(np.unique(masks)) <= {0, 1}
    fused = FusedMasks(tmp_path / "fused")
    # Area rule: a 128 px pixel is foreground iff >= half of its k x k block of source mask pixels is.
    blocks = block_mean(fused[1], 128)
    np.testing.assert_array_equal(masks[1], blocks >= 0.5)
    # Reduced-scale decode stays within JPEG noise of a full decode + resize.
    full = Image.open(subset / "CelebA-HQ-img" / "2001.jpg").convert("RGB").resize((128, 128), Image.Resampling.BOX)
    assert np.abs(images[1].astype(int) - np.asarray(full, dtype=int)).mean() < 3


def test_input_scale_stores_images_larger_than_masks(synthetic: Path, tmp_path: Path) -> None:
    subset = copy_samples(synthetic, tmp_path / "data", list(SYNTHETIC_PHOTO))
    fuse_dataset(Source(subset), tmp_path / "fused", TWO, n_jobs=1)
    summary = resize_dataset(Source(subset), tmp_path / "fused", tmp_path / "r1", 64, n_jobs=1)
    resize_dataset(Source(subset), tmp_path / "fused", tmp_path / "r2", 64, input_scale=2, n_jobs=1)
    one, two = ResizedArrays(tmp_path / "r1"), ResizedArrays(tmp_path / "r2")
    assert (summary["size"], summary["input_size"]) == (64, 64)
    assert (two.spec.size, two.spec.input_size, two.spec.input_scale) == (64, 128, 2)
    assert two.images.shape == (2, 128, 128, 3)
    np.testing.assert_array_equal(one.masks, two.masks)  # the targets do not change, only the photo's detail
    np.testing.assert_array_equal(
        two.images[1], decode_image((subset / "CelebA-HQ-img" / "2001.jpg").read_bytes(), 128, "2001.jpg")
    )


def test_resized_data_carries_its_layout(synthetic: Path, tmp_path: Path) -> None:
    """meta.json names what the arrays hold, so training reads the targets from the data, not from params."""
    subset = copy_samples(synthetic, tmp_path / "data", list(SYNTHETIC_PHOTO))
    fuse_dataset(Source(subset), tmp_path / "fused", TWO, rule="label_map", aux_targets={"skin": ["skin"]}, n_jobs=1)
    resize_dataset(Source(subset), tmp_path / "fused", tmp_path / "r", 64, input_scale=2, n_jobs=1)
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert (meta["targets"], meta["target_parts"]) == (["eyes", "lips"], TWO)
    assert meta["channels"] == ["eyes", "lips", "skin"]
    assert (meta["rule"], meta["aux_targets"], meta["prior"]) == ("label_map", {"skin": ["skin"]}, "none")
    assert (meta["size"], meta["input_scale"], meta["train_scale"], meta["input_channels"]) == (64, 2, 1, 3)
    assert ResizedArrays(tmp_path / "r").spec == DataSpec(TWO, 64, "label_map", {"skin": ["skin"]}, 2, 1, "none")
    (tmp_path / "r" / "meta.json").write_text('{"prior": "none"}')  # as resize wrote it before the layout
    with pytest.raises(
        DataError,
        match=r"r/meta.json: no target_parts, size, rule, aux_targets, input_scale, "
        r"train_scale \(written by an older eyelip\); re-run `dvc repro resize`",
    ):
        ResizedArrays(tmp_path / "r")


def test_train_scale_stores_training_masks_by_the_same_rule_at_a_finer_size(synthetic: Path, tmp_path: Path) -> None:
    subset = copy_samples(synthetic, tmp_path / "data", list(SYNTHETIC_PHOTO))
    fuse_dataset(Source(subset), tmp_path / "fused", TWO, n_jobs=1)
    summary = resize_dataset(
        Source(subset), tmp_path / "fused", tmp_path / "r", 64, input_scale=2, train_scale=2, n_jobs=1
    )
    arrays, fused = ResizedArrays(tmp_path / "r"), FusedMasks(tmp_path / "fused")
    assert summary["train_size"] == 128
    assert (arrays.spec.size, arrays.spec.train_size, arrays.spec.train_scale) == (64, 128, 2)
    # Both from the source masks by the coverage rule: finer blocks for training, coarser for scoring.
    np.testing.assert_array_equal(arrays.train_masks[1], block_mean(fused[1], 128) >= 0.5)
    np.testing.assert_array_equal(arrays.masks[1], block_mean(fused[1], 64) >= 0.5)
    images, train_masks = arrays.batch(np.array([0, 1]), train=True)
    assert images.shape == (2, 3, 128, 128) and train_masks.shape == (2, 2, 128, 128)
    assert arrays.batch(np.array([0, 1]))[1].shape == (2, 2, 64, 64)
    with pytest.raises(ParamError, match=r"resize\.train_scale: 2 must divide resize\.input_scale \(1\)"):
        resize_dataset(Source(subset), tmp_path / "fused", tmp_path / "bad", 64, train_scale=2, n_jobs=1)
    assert not (tmp_path / "bad").exists()


def test_resize_mask_keeps_half_covered_pixels() -> None:
    mask = np.zeros((4, 4), bool)
    mask[0, 0:2] = True  # 2 of 4 pixels in the top-left 2x2 block: kept
    mask[2, 2] = True  # 1 of 4: dropped
    np.testing.assert_array_equal(resize_mask(mask, 2), [[True, False], [False, False]])
    np.testing.assert_array_equal(mask_coverage(mask, 2), [[128, 0], [0, 64]])  # 2/4 and 1/4 of 255, rounded


# --- bad input: one clear message naming the file or key ---------------------------------------


def test_missing_or_wrong_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.root: .*nowhere does not exist"):
        Source(tmp_path / "nowhere")
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match=r"not CelebAMask-HQ-shaped: CelebA-HQ-img/ not found"):
        Source(tmp_path / "photos")
    (tmp_path / "notes.zip").write_text("not a zip")
    with pytest.raises(DataError, match=r"neither a folder nor a zip"):
        Source(tmp_path / "notes.zip")


def test_unknown_part_names_the_key() -> None:
    with pytest.raises(ParamError, match=r"data.targets.eyes: unknown part 'l_eyes'"):
        check_targets({"eyes": ["l_eyes"]})


@pytest.fixture
def damaged(synthetic: Path, tmp_path: Path) -> Path:
    """Ten samples: #2 has a truncated JPEG, #4 a corrupt part PNG, #6 a 256 px mask."""
    root = copy_samples(synthetic, tmp_path / "data", list(range(10)))
    jpg = root / "CelebA-HQ-img" / "2.jpg"
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    (root / mask_relpath(4, "u_lip")).write_bytes(b"\x89PNG garbage")
    small = root / mask_relpath(6, "skin")
    Image.open(small).resize((256, 256)).save(small)
    for part in ("l_eye", "r_eye", "u_lip", "l_lip"):  # only the resized part is left to size sample 6
        (root / mask_relpath(6, part)).unlink(missing_ok=True)
    return root


def test_bad_samples_fail_with_the_file_named(damaged: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"00004_u_lip.png: not a readable image .*\(sample 4\); replace or restore "
        r"the file, or set data.on_error: skip",
    ):
        fuse_dataset(Source(damaged), tmp_path / "fused", EYES_LIPS, n_jobs=1)
    assert not (tmp_path / "fused").exists(), "a failed stage must leave no output"


def test_bad_samples_are_skipped_and_listed(damaged: Path, tmp_path: Path) -> None:
    summary = fuse_dataset(Source(damaged), tmp_path / "fused", EYES_LIPS, on_error="skip", n_jobs=2)
    skipped = (tmp_path / "fused" / "skipped.json").read_text()
    assert summary["skipped"] == 2 and "00004_u_lip.png" in skipped and "256x256" in skipped
    assert "00004_u_lip.png: not a readable image" in skipped and "replace" not in skipped  # no advice in the list
    with pytest.raises(DataError, match=r"2.jpg: corrupt or truncated image"):
        resize_dataset(Source(damaged), tmp_path / "fused", tmp_path / "resized", 64, n_jobs=1)
    assert not (tmp_path / "resized").exists()
    summary = resize_dataset(Source(damaged), tmp_path / "fused", tmp_path / "resized", 64, on_error="skip", n_jobs=1)
    assert read_ids(tmp_path / "resized" / "ids.txt") == [0, 1, 3, 5, 7, 8, 9] and summary["skipped"] == 1


def test_missing_mask_folder_is_named(synthetic: Path, tmp_path: Path) -> None:
    root = copy_samples(synthetic, tmp_path / "data", [0, 2000])
    shutil.rmtree(root / "CelebAMask-HQ-mask-anno" / "1")
    with pytest.raises(DataError, match=r"2000.jpg: its mask folder .*CelebAMask-HQ-mask-anno/1/ is missing"):
        fuse_dataset(Source(root), tmp_path / "fused", EYES_LIPS, n_jobs=1)


def test_decode_image_rejects_non_images() -> None:
    with pytest.raises(DataError, match=r"photo.jpg: not a readable image"):
        decode_image(b"hello", 64, "photo.jpg")
    png = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(png, "PNG")
    assert decode_image(png.getvalue(), 16, "x.png").shape == (16, 16, 3)


# --- output mechanics ---------------------------------------------------------------------------


def test_interrupted_output_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("previous run")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(tmp_path / "out", directory=True) as tmp:
            (tmp / "half.npy").write_bytes(b"...")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "old.txt").read_text() == "previous run"


def test_row_writer_makes_a_loadable_memmap(tmp_path: Path) -> None:
    rows = np.arange(5 * 3 * 4, dtype=np.uint8).reshape(5, 3, 4)
    with NpyRowWriter(tmp_path / "a.npy", (3, 4), np.uint8) as writer:
        writer.append(rows[:2])
        writer.append(rows[2:])
    loaded = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert loaded.shape == (5, 3, 4)
    np.testing.assert_array_equal(loaded, rows)
