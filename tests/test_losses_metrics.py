import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eyelip.errors import ParamError
from eyelip.model.losses import DiceLoss, JaccardLoss, LovaszHingeLoss, build_loss
from eyelip.model.metrics import ConfusionMeter, accuracy, confusion, dice, iou, precision, recall
from eyelip.params.train import LossParams
from eyelip.params.whole import parse

BIG = 30.0  # |logit| that makes sigmoid exactly 0/1 in float32


def masks(*rows: list[list[int]]) -> torch.Tensor:
    """Stack 2-D 0/1 lists into a float (N, 1, H, W) batch."""
    return torch.tensor(rows, dtype=torch.float32).unsqueeze(1)


def hard_logits(target: torch.Tensor) -> torch.Tensor:
    return (2 * target - 1) * BIG


# --------------------------------------------------------------------------- metrics


def test_confusion_counts_and_scores_of_a_2x2_case():
    probs = masks([[0.9, 0.6], [0.4, 0.1]])  # predicted: top row
    target = masks([[1, 0], [1, 0]])  # target: left column
    counts = confusion(probs, target)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [[[1, 1, 1, 1]]]  # tp, fp, fn, tn
    assert iou(counts).item() == pytest.approx(1 / 3)
    assert dice(counts).item() == pytest.approx(1 / 2)
    assert precision(counts).item() == pytest.approx(1 / 2)
    assert recall(counts).item() == pytest.approx(1 / 2)
    assert accuracy(counts).item() == pytest.approx(1 / 2)


def test_threshold_is_inclusive_and_configurable():
    probs = masks([[0.5, 0.7]])
    target = masks([[1, 1]])
    assert confusion(probs, target)[0, 0, 0] == 2
    assert confusion(probs, target, threshold=0.6)[0, 0, 0] == 1


def test_pooled_and_per_image_iou_differ():
    # image 0: large target found exactly (IoU 1); image 1: one-pixel target missed (IoU 0)
    probs = masks([[1, 1], [1, 1]], [[0, 1], [0, 0]])
    target = masks([[1, 1], [1, 1]], [[1, 0], [0, 0]])
    counts = confusion(probs, target)
    assert iou(counts, "none").tolist() == [[1.0], [0.0]]
    assert iou(counts, "per_image").item() == pytest.approx(0.5)
    assert iou(counts, "pooled").item() == pytest.approx(4 / 6)  # 4 / (4 + 1 + 1)
    # pooled also accepts counts already summed over images
    assert iou(counts.sum(0), "pooled").item() == pytest.approx(4 / 6)


def test_empty_prediction_and_empty_target_score_one():
    empty = masks([[0, 0], [0, 0]])
    counts = confusion(empty, empty)
    for score in (iou, dice, precision, recall, accuracy):
        assert score(counts, "per_image").item() == 1.0
        assert score(counts, "pooled").item() == 1.0
    # a false positive on an empty target is a complete miss, not undefined
    assert iou(confusion(masks([[1, 0], [0, 0]]), empty)).item() == 0.0


def test_scores_are_per_channel():
    probs = torch.zeros(1, 2, 2, 2)
    probs[0, 0] = 1  # channel 0 predicts everything, channel 1 nothing
    target = torch.ones(1, 2, 2, 2)
    counts = confusion(probs, target)
    assert counts.shape == (1, 2, 4)
    assert iou(counts).tolist() == [1.0, 0.0]
    assert iou(counts, "none").shape == (1, 2)


def test_metric_input_validation():
    with pytest.raises(TypeError, match="torch tensors"):
        confusion(np.zeros((1, 1, 2, 2)), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        confusion(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
    counts = torch.zeros(3, 1, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="reduction must be one of"):
        iou(counts, "mean")
    with pytest.raises(ValueError, match="per-image counts"):
        iou(counts.sum(0), "per_image")


def test_meter_accumulates_like_one_big_batch():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(6, 2, 8, 8, generator=generator)
    target = (torch.rand(6, 2, 8, 8, generator=generator) > 0.7).float()
    meter = ConfusionMeter(names=["eyes", "lips"])
    meter.update(probs[:4], target[:4])
    meter.update(probs[4:], target[4:])
    counts = confusion(probs, target)
    assert torch.equal(meter.counts(), counts)
    result = meter.compute()
    assert result["iou"] == pytest.approx(iou(counts).mean().item())
    assert result["iou_per_image"] == pytest.approx(iou(counts, "per_image").mean().item())
    assert result["iou_lips"] == pytest.approx(iou(counts)[1].item())
    assert set(result) == {
        "iou", "iou_per_image", "dice", "precision", "recall", "accuracy",
        "iou_eyes", "iou_lips", "iou_per_image_eyes", "iou_per_image_lips",
    }  # fmt: skip
    meter.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        meter.compute()


# --------------------------------------------------------------------------- losses


def test_jaccard_loss_of_perfect_and_complementary_predictions():
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 4:12] = 1  # 64 of 256 pixels
    loss = JaccardLoss()
    assert loss(hard_logits(target), target).item() == pytest.approx(0.0, abs=1e-6)
    # complement: I = 0, U = 192 + 64 = 256, so 1 - 1 / 257
    assert loss(-hard_logits(target), target).item() == pytest.approx(1 - 1 / 257)


def test_soft_values_by_hand():
    # logits 0 -> p = 0.5 on 4 pixels, one positive: I = 0.5, |P| = 2, |T| = 1, U = 2.5
    logits = torch.zeros(1, 1, 2, 2)
    target = masks([[1, 0], [0, 0]])
    assert JaccardLoss()(logits, target).item() == pytest.approx(1 - 1.5 / 3.5)
    assert DiceLoss()(logits, target).item() == pytest.approx(1 - 2 / 4)


def test_per_image_and_per_batch_reductions():
    logits = torch.zeros(2, 1, 2, 2)  # p = 0.5 everywhere
    target = masks([[1, 1], [1, 1]], [[0, 0], [0, 0]])
    # per image: full target I=2, U=4 -> 1 - 3/5; empty target I=0, U=2 -> 1 - 1/3
    expected = ((1 - 3 / 5) + (1 - 1 / 3)) / 2
    assert JaccardLoss(reduction="per_image")(logits, target).item() == pytest.approx(expected)
    # per batch: I = 2, U = 6 -> 1 - 3/7
    assert JaccardLoss(reduction="per_batch")(logits, target).item() == pytest.approx(1 - 3 / 7)


def test_empty_target_and_empty_prediction_cost_nothing():
    target = torch.zeros(1, 1, 4, 4)
    assert JaccardLoss()(hard_logits(target), target).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceLoss()(hard_logits(target), target).item() == pytest.approx(0.0, abs=1e-6)


def test_hard_jaccard_loss_agrees_with_the_iou_metric():
    generator = torch.Generator().manual_seed(1)
    target = (torch.rand(4, 2, 8, 8, generator=generator) > 0.6).float()
    pred = (torch.rand(4, 2, 8, 8, generator=generator) > 0.5).float()
    loss = JaccardLoss(smooth=1e-6)(hard_logits(pred), target)
    metric = iou(confusion(pred, target), "per_image").mean()
    assert 1 - loss.item() == pytest.approx(metric.item(), abs=1e-5)


@pytest.mark.parametrize("loss", [JaccardLoss(), DiceLoss(), JaccardLoss(reduction="per_batch")])
def test_gradients_push_logits_towards_the_target(loss):
    target = masks([[1, 0], [0, 0]])
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss(logits, target).backward()
    grad = logits.grad[0, 0]
    assert grad[0, 0] < 0  # raising the positive pixel's logit lowers the loss
    assert (grad.flatten()[1:] > 0).all()  # raising a background logit raises it


def test_combined_loss_sums_weighted_terms_and_reports_them():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 2, 8, 8, generator=generator, requires_grad=True)
    target = (torch.rand(2, 2, 8, 8, generator=generator) > 0.8).float()
    loss = build_loss(LossParams(jaccard=1.0, bce=0.5, dice=0.0))
    total, parts = loss(logits, target)
    assert set(parts) == {"jaccard_loss", "bce_loss"}
    assert not any(p.requires_grad for p in parts.values())
    assert parts["jaccard_loss"] == pytest.approx(JaccardLoss()(logits, target).item())
    bce = F.binary_cross_entropy_with_logits(logits, target)
    assert parts["bce_loss"] == pytest.approx(bce.item())
    assert total.item() == pytest.approx(parts["jaccard_loss"].item() + 0.5 * bce.item())
    total.backward()
    assert logits.grad.abs().sum() > 0


def test_pos_weight_is_per_channel():
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.ones(1, 2, 2, 2)
    _, parts = build_loss(LossParams(jaccard=0, bce=1, pos_weight=[1.0, 3.0]))(logits, target)
    # all pixels positive with p = 0.5: per-channel BCE = w * ln 2, averaged over channels
    assert parts["bce_loss"].item() == pytest.approx((1 + 3) / 2 * np.log(2))


def _pooled_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    pred, target = pred.bool(), target.bool()
    union = (pred | target).sum().item()
    return (pred & target).sum().item() / union if union else 1.0


@pytest.mark.parametrize("reduction", ["per_image", "per_batch"])
def test_lovasz_hinge_is_the_jaccard_loss_of_the_wrong_pixels_when_errors_are_0_or_1(reduction):
    # Logit +-1 on the right side gives hinge error 0, logit 0 gives error 1: on such {0, 1} errors the
    # Lovasz extension is the set function itself, 1 - IoU of the mask with those pixels flipped.
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(3, 2, 6, 7, generator=gen) < 0.3).float()
    wrong = torch.rand(3, 2, 6, 7, generator=gen) < 0.2
    logits = torch.where(wrong, torch.zeros_like(target), 2 * target - 1)
    predicted = torch.where(wrong, 1 - target, target)
    if reduction == "per_image":
        groups = [(predicted[n, c], target[n, c]) for n in range(3) for c in range(2)]
    else:
        groups = [(predicted[:, c], target[:, c]) for c in range(2)]
    expected = np.mean([1 - _pooled_iou(p, t) for p, t in groups])
    assert LovaszHingeLoss(reduction)(logits, target).item() == pytest.approx(expected)


def test_lovasz_hinge_margins_and_empty_targets():
    target = masks([[0, 1], [1, 0]], [[0, 0], [0, 0]])
    assert LovaszHingeLoss()(hard_logits(target), target).item() == 0.0  # right side, margin >= 1
    # An empty target costs its largest hinge error: the most confident false positive's, 1 + 2.5.
    logits = torch.stack([hard_logits(target[0]), torch.tensor([[[-3.0, 2.5], [0.0, -1.0]]])])
    assert LovaszHingeLoss()(logits, target).item() == pytest.approx((0 + 3.5) / 2)


def test_lovasz_hinge_trains_in_the_combined_loss():
    target = masks([[0, 1, 1], [0, 1, 0]])
    logits = torch.zeros_like(target, requires_grad=True)
    total, parts = build_loss(LossParams(jaccard=0.0, lovasz=1.0))(logits, target)
    assert set(parts) == {"lovasz_loss"} and total.item() == pytest.approx(1.0)
    total.backward()
    # Descent raises the logits of the target pixels and lowers the others (pixels sorted after the
    # last target pixel get no gradient: IoU is already 0 there).
    grad = logits.grad
    assert (grad[target.bool()] <= 0).all() and (grad[~target.bool()] >= 0).all() and grad.abs().sum() > 0


def test_build_loss_from_params():
    cfg = {"jaccard": 1.0, "bce": 0.5, "dice": 0.0, "smooth": 2.0, "reduction": "per_batch"}
    loss = build_loss(LossParams(**cfg))
    assert loss.weights == {"jaccard": 1.0, "bce": 0.5}
    assert loss.jaccard.smooth == 2.0 and loss.jaccard.reduction == "per_batch"
    assert build_loss(LossParams()).weights == {"jaccard": 1.0}


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"xyz": 1.0}, r"train\.loss\.xyz: unknown key; expected one of jaccard, bce"),
        ({"bce": -0.5}, r"train\.loss\.bce: expected a value >= 0, got -0\.5"),
        ({"jaccard": 0.0, "bce": 0.0, "dice": 0.0}, r"train\.loss: all weights .* are 0"),
        ({"lovasz": -1.0}, r"train\.loss\.lovasz: expected a value >= 0"),
        ({"reduction": "mean"}, r"train\.loss\.reduction: expected one of 'per_image', 'per_batch', got 'mean'"),
        ({"smooth": 0.0}, r"train\.loss\.smooth: expected a value > 0"),
        ({"smooth": True}, r"train\.loss\.smooth: expected a number, got True"),  # not 1.0
        ({"bce": 1.0, "pos_weight": [2.0, 0.0]}, r"train\.loss\.pos_weight: expected .*a value > 0"),
    ],
)
def test_bad_loss_params_are_rejected_with_their_key(cfg, message):
    with pytest.raises(ParamError, match=message):
        parse({"train": {"loss": cfg}})
