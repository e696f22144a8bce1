import numpy as np
import pytest
import torch

from eyelip.data.dataset import ResizedArrays
from eyelip.errors import ParamError
from eyelip.params.train import AugmentParams
from eyelip.params.whole import parse
from eyelip.training.augment import Augment
from eyelip.training.loop import TrainConfig, Trainer

FULL = {"hflip": 0.5, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05,
        "rotate": 10, "scale": 0.1, "translate": 0.05}  # fmt: skip


def batch(n: int = 4, channels: int = 2, size: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=generator)
    masks = (torch.rand(n, channels, size, size, generator=generator) > 0.7).float()
    return images, masks


def run(cfg, images, masks, seed=0, flip_pairs=()):
    return Augment(AugmentParams(**cfg), flip_pairs)(images, masks, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cfg", [{}, dict.fromkeys(AugmentParams.model_fields, 0)])
def test_disabled_augmentation_is_identity(cfg):
    images, masks = batch()
    out_images, out_masks = run(cfg, images, masks)
    assert torch.equal(out_images, images) and torch.equal(out_masks, masks)


def test_same_seed_same_output_and_inputs_untouched():
    images, masks = batch()
    before = images.clone(), masks.clone()
    first = run(FULL, images, masks, seed=7)
    second = run(FULL, images, masks, seed=7)
    other = run(FULL, images, masks, seed=8)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])
    assert torch.equal(images, before[0]) and torch.equal(masks, before[1])


def test_full_augmentation_keeps_ranges_and_shapes():
    images, masks = batch(n=8)
    out_images, out_masks = run(FULL, images, masks)
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert 0 <= out_images.min() and out_images.max() <= 1
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}


def test_hflip_swaps_paired_channels():
    images, masks = batch(channels=3)
    out_images, out_masks = run({"hflip": 1.0}, images, masks, flip_pairs=[(0, 2)])
    assert torch.equal(out_images, images.flip(-1))
    assert torch.equal(out_masks[:, 0], masks[:, 2].flip(-1))
    assert torch.equal(out_masks[:, 2], masks[:, 0].flip(-1))
    assert torch.equal(out_masks[:, 1], masks[:, 1].flip(-1))


def test_hflip_without_pairs_keeps_channel_order():
    images, masks = batch()
    _, out_masks = run({"hflip": 1.0}, images, masks)
    assert torch.equal(out_masks, masks.flip(-1))


def test_hflip_is_decided_per_sample_and_jointly():
    images, masks = batch(n=32)
    out_images, out_masks = run({"hflip": 0.5}, images, masks)
    flipped = [torch.equal(out_images[i], images[i].flip(-1)) for i in range(32)]
    kept = [torch.equal(out_images[i], images[i]) for i in range(32)]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < 32
    for i in range(32):
        assert torch.equal(out_masks[i], masks[i].flip(-1) if flipped[i] else masks[i])


def test_affine_warp_moves_image_and_mask_together():
    _, masks = batch(n=6, channels=1, size=32)
    masks[:, :, 8:24, 8:24] = 1  # a solid block that survives the warp
    images = masks.repeat(1, 3, 1, 1)  # the image is the mask, so both must warp identically
    out_images, out_masks = run({"rotate": 30, "scale": 0.2, "translate": 0.1}, images, masks)
    assert not torch.equal(out_masks, masks)
    assert torch.equal((out_images > 0.5).float(), out_masks.expand_as(out_images))


def test_warp_moves_masks_smaller_than_the_image_with_it():
    # resize.input_scale 2: images are twice the mask size; one warp must move both the same way.
    masks = torch.zeros(6, 1, 32, 32)
    masks[:, :, 8:24, 10:20] = 1
    images = torch.nn.functional.interpolate(masks, scale_factor=2, mode="nearest").repeat(1, 3, 1, 1)
    out_images, out_masks = run({"hflip": 0.5, "rotate": 30, "scale": 0.2, "translate": 0.1}, images, masks)
    assert out_images.shape == (6, 3, 64, 64) and out_masks.shape == (6, 1, 32, 32)
    down = torch.nn.functional.avg_pool2d(out_images[:, :1], 2) > 0.5
    agree = (down == out_masks.bool()).float().mean()
    assert agree > 0.98, agree  # only re-binarisation at the edges may differ
    with pytest.raises(ValueError, match="masks must be"):
        run({}, images, torch.zeros(6, 1, 24, 24))


def test_pure_translation_keeps_area_and_bounds_the_shift():
    # translate t shifts by U(-t, t) of the size: 0.125 * 32 = 4 pixels at most per axis.
    masks = torch.zeros(8, 1, 32, 32)
    masks[:, :, 12:20, 12:20] = 1
    out_images, out_masks = run({"translate": 0.125}, masks.repeat(1, 3, 1, 1), masks)
    coords = torch.arange(32.0)
    for mask in out_masks[:, 0]:
        assert 56 <= mask.sum() <= 72  # 64 pixels, +-1 row/column from re-binarisation
        cy = (mask.sum(1) * coords).sum() / mask.sum()
        cx = (mask.sum(0) * coords).sum() / mask.sum()
        assert abs(cy - 15.5) <= 4.5 and abs(cx - 15.5) <= 4.5


def coordinate_images(n: int, size: int) -> torch.Tensor:
    """Images whose channels 0 and 1 hold each pixel's row and column, so a crop shows where it was cut."""
    rows = torch.arange(size, dtype=torch.float32).view(1, 1, size, 1).expand(n, 1, size, size)
    return torch.cat([rows, rows.transpose(2, 3), torch.zeros(n, 1, size, size)], 1)


def test_crop_is_centred_on_the_targets_and_keeps_them_whole():
    masks = torch.zeros(3, 2, 32, 32)
    masks[0, 0, 4:8, 20:30] = 1  # both channels' boxes count: rows 4..13, cols 20..29
    masks[0, 1, 10:14, 22:24] = 1
    masks[1, 0, 0:3, 0:3] = 1  # near the corner: the window is clamped into the frame
    images = coordinate_images(3, 32)  # sample 2 has no targets: the window is the middle of the frame
    out_images, out_masks = run({"crop": 16}, images, masks)
    assert out_images.shape == (3, 3, 16, 16) and out_masks.shape == (3, 2, 16, 16)
    assert torch.equal(out_masks.sum((1, 2, 3)), masks.sum((1, 2, 3)))  # nothing of the targets is cut off
    tops, lefts = out_images[:, 0, 0, 0].tolist(), out_images[:, 1, 0, 0].tolist()
    # Rows: (4 + 13) / 2 - 7.5 = 1. Columns: (20 + 29) / 2 - 7.5 = 17 would end past the frame: 16.
    assert (tops, lefts) == ([1, 0, 8], [16, 0, 8])
    for i, (top, left) in enumerate(zip(tops, lefts)):
        top, left = int(top), int(left)
        assert torch.equal(out_masks[i], masks[i, :, top : top + 16, left : left + 16])


def test_crop_jitter_moves_the_window_within_its_bound_and_photos_follow_masks():
    # resize.input_scale 2: the photo window is twice the mask window, at twice its offset.
    n, masks = 64, torch.zeros(64, 1, 32, 32)
    masks[:, :, 12:20, 12:20] = 1  # centred at 15.5: a 16 px window starts at 8 without jitter
    images = coordinate_images(n, 64)
    out_images, out_masks = run({"crop": 16, "crop_jitter": 3}, images, masks)
    assert out_images.shape == (n, 3, 32, 32) and out_masks.shape == (n, 1, 16, 16)
    tops, lefts = out_images[:, 0, 0, 0] / 2, out_images[:, 1, 0, 0] / 2
    assert ((5 <= tops) & (tops <= 11)).all() and ((5 <= lefts) & (lefts <= 11)).all()
    assert len(set(tops.tolist())) > 3 and not torch.equal(tops, lefts)  # drawn per sample and axis
    for i in range(n):
        top, left = int(tops[i]), int(lefts[i])
        assert torch.equal(out_masks[i], masks[i, :, top : top + 16, left : left + 16])
        assert torch.equal(out_images[i], images[i, :, 2 * top : 2 * top + 32, 2 * left : 2 * left + 32])


def test_colour_jitter_leaves_masks_alone_and_gray_stays_gray():
    images, masks = batch()
    gray = images[:, :1].expand(-1, 3, -1, -1)
    out_images, out_masks = run({"saturation": 0.5, "hue": 0.5}, gray, masks)
    torch.testing.assert_close(out_images, gray.clamp(0, 1))  # no chroma to scale or rotate
    assert torch.equal(out_masks, masks)


def test_brightness_scales_each_image_by_one_factor_in_range():
    images, masks = batch()
    images = images * 0.5 + 0.1  # keep clear of the clamp
    out_images, _ = run({"brightness": 0.2}, images, masks)
    ratio = out_images / images
    per_image = ratio.flatten(1)
    torch.testing.assert_close(per_image, per_image[:, :1].expand_as(per_image))
    assert ((0.8 <= per_image[:, 0]) & (per_image[:, 0] <= 1.2)).all()


def test_contrast_keeps_mean_luma_and_scales_deviations():
    images, masks = batch()
    images = images * 0.5 + 0.25  # keep clear of the clamp: factors are within 1 +- 0.2
    out_images, _ = run({"contrast": 0.2}, images, masks)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)

    def mean_luma(x: torch.Tensor) -> torch.Tensor:
        return (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)

    mean = mean_luma(images)
    torch.testing.assert_close(mean_luma(out_images), mean)
    factor = ((out_images - mean) / (images - mean)).flatten(1).median(1).values
    assert ((0.8 <= factor) & (factor <= 1.2)).all() and not torch.allclose(factor, torch.ones(4))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"flip": 0.5}, r"train\.augment\.flip: unknown key; did you mean train\.augment\.hflip\?"),
        ({"hflip": 1.5}, r"train\.augment\.hflip: expected a value <= 1, got 1\.5"),
        ({"rotate": -5}, r"train\.augment\.rotate: expected a value >= 0, got -5"),
        ({"scale": 1.0}, r"train\.augment\.scale: expected a value < 1, got 1\.0"),
        ({"crop": 40.5}, r"train\.augment\.crop: expected an integer, got 40\.5"),
        ({"crop_jitter": -1}, r"train\.augment\.crop_jitter: expected a value >= 0, got -1"),
    ],
)
def test_bad_params_are_rejected_with_their_key(cfg, message):
    with pytest.raises(ParamError, match=message):
        parse({"train": {"augment": cfg}})


def test_a_crop_larger_than_the_masks_is_named():
    images, masks = batch(size=16)
    with pytest.raises(
        ValueError, match=r"train\.augment\.crop: a 32 px window does not fit 16x16 masks; use at most 16"
    ):
        run({"crop": 32}, images, masks)


def test_bad_flip_pairs_are_rejected():
    with pytest.raises(ValueError, match="disjoint"):
        Augment(AugmentParams(), flip_pairs=[(0, 1), (1, 2)])
    images, masks = batch(channels=2)
    with pytest.raises(ValueError, match="out of range"):
        run({"hflip": 1.0}, images, masks, flip_pairs=[(0, 2)])


def test_mirror_pairs_follow_the_targets_parts() -> None:
    from eyelip.data.layout import mirror_pairs

    assert mirror_pairs({"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}) == []
    assert mirror_pairs({"eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}) == []
    assert mirror_pairs({"lips": ["u_lip"], "right": ["r_eye", "r_brow"], "left": ["l_brow", "l_eye"]}) == [(1, 2)]
    with pytest.raises(ValueError, match=r"train.augment.hflip: target 'left'"):
        mirror_pairs({"left": ["l_eye"]})


def test_training_crops_while_validation_sees_whole_faces(tiny_arrays: ResizedArrays) -> None:
    params = {
        "model": {"base_width": 4, "depth": 2},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.01, "seed": 0, "augment": {"crop": 16, "crop_jitter": 2}},
    }
    trainer = Trainer(
        TrainConfig.from_params(parse(params)), tiny_arrays, np.arange(8), np.arange(8, 16), ["eyes_lips"]
    )
    shapes = []
    trainer.model.register_forward_pre_hook(lambda _, args: shapes.append((trainer.model.training, args[0].shape[2:])))
    trainer.train_epoch(1)
    trainer.evaluate(np.arange(8, 16))
    assert set(shapes) == {(True, (16, 16)), (False, (32, 32))}

    params["train"]["augment"]["crop"] = 18  # depth 2 halves twice: windows must be a multiple of 4
    with pytest.raises(
        ParamError, match=r"train\.augment\.crop: 18 px windows do not halve evenly .* multiple of 4, or 0"
    ):
        parse(params)
