import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from eyelip.errors import ParamError
from eyelip.model.unet import UNet, block_logits, build_model
from eyelip.params.model import ModelParams
from eyelip.params.whole import parse


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("base_width", "depth", "norm", "size"),
    [(8, 3, "batch", 24), (16, 4, "batch", 32), (4, 4, "group", 48), (8, 2, "none", 20)],
)
def test_output_is_logits_of_input_size(base_width, depth, norm, size):
    model = UNet(out_channels=2, base_width=base_width, depth=depth, norm=norm).eval()
    out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 2, size, size)
    assert out.dtype == torch.float32


def test_non_square_input():
    assert UNet(base_width=4, depth=3).eval()(torch.rand(1, 3, 16, 40)).shape == (1, 1, 16, 40)


def test_size_not_divisible_by_2_pow_depth_raises():
    with pytest.raises(ValueError, match=r"divisible by 16, got 40x48"):
        UNet(base_width=4, depth=4)(torch.rand(1, 3, 40, 48))
    # the same size is fine one level shallower (40 and 48 are multiples of 8)
    UNet(base_width=4, depth=3).eval()(torch.rand(1, 3, 40, 48))


def test_input_scale_folds_a_larger_image_into_the_output_size():
    # Seeded: with some random weights a dead ReLU path hides the change below, or the U-Net's wide
    # receptive field carries it to the far corner (each in ~1 of 10 seeds).
    torch.manual_seed(0)
    model = UNet(base_width=4, depth=3, input_scale=2).eval()
    assert model(torch.rand(2, 3, 64, 48)).shape == (2, 1, 32, 24)
    # Each output pixel sees its own 2x2 input block: changing one block moves the logits there.
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[..., 40:42, 20:22] += 0.5
    changed = (model.unshuffle(y) != model.unshuffle(x)).any(1)[0]  # the fold itself: exactly one pixel
    assert changed.nonzero().tolist() == [[20, 10]]
    diff = (model(y) - model(x)).abs()[0, 0]
    assert diff[20, 10] > 0 and diff[0, 0] == 0
    with pytest.raises(ValueError, match=r"input_scale=2, output_scale=1\) needs H and W divisible by 16, got 40x48"):
        model(torch.rand(1, 3, 40, 48))
    assert n_params(UNet(base_width=4, depth=3, input_scale=2)) > n_params(UNet(base_width=4, depth=3))


def test_block_logits_are_the_logit_of_each_blocks_mean_probability():
    logits = torch.randn(2, 3, 8, 12) * 40  # many of them saturate sigmoid in float32
    out = block_logits(logits, 2, 3)
    mean = F.avg_pool2d(torch.sigmoid(logits.double()), 2)
    assert out.shape == (2, 3, 4, 6)
    torch.testing.assert_close(torch.sigmoid(out.double()), mean, atol=1e-6, rtol=0)
    moderate = torch.randn(2, 3, 8, 12) * 3  # no ties at exactly 0.5, which float error could break
    assert torch.equal(block_logits(moderate, 2, 3) >= 0, F.avg_pool2d(torch.sigmoid(moderate.double()), 2) >= 0.5)
    # Exact in log space, where a probability-space mean would round to 1 and give an infinite logit.
    block = torch.tensor([[[[100.0, 100.0], [100.0, -100.0]]], [[[300.0, 300.0], [300.0, 300.0]]]])
    out = block_logits(block, 2, 1).flatten()
    assert out[0].item() == pytest.approx(math.log(3)) and 290 < out[1].item() < 310
    assert block_logits(logits, 1, 3) is logits


def test_output_scale_trains_at_the_finer_size_and_evaluates_block_averages():
    torch.manual_seed(0)
    model = UNet(base_width=4, depth=3, input_scale=2, output_scale=2)
    x = torch.rand(2, 3, 64, 48)
    assert model(x).shape == (2, 1, 64, 48)  # training mode: the logits the fine masks train
    assert isinstance(model.unshuffle, torch.nn.Identity)  # the network itself runs at the photo's size
    model.eval()
    fine = []
    model.head.register_forward_hook(lambda _, __, out: fine.append(out))
    out = model(x)
    assert out.shape == (2, 1, 32, 24)
    torch.testing.assert_close(out, block_logits(fine[0], 2, 1))
    with pytest.raises(ValueError, match=r"output_scale must be a divisor of input_scale 2, got 3"):
        UNet(input_scale=2, output_scale=3)
    with pytest.raises(ValueError, match=r"output_scale=4\) needs H and W divisible by 8, got 36x36"):
        UNet(base_width=4, depth=1, input_scale=8, output_scale=4).eval()(torch.rand(1, 3, 36, 36))


def test_prior_gate_keeps_the_output_near_the_prior_outlines():
    torch.manual_seed(0)
    gated = UNet(in_channels=5, out_channels=2, base_width=4, depth=3, input_scale=2, output_scale=2, prior_gate=2)
    plain = UNet(in_channels=5, out_channels=2, base_width=4, depth=3, input_scale=2, output_scale=2)
    plain.load_state_dict(gated.state_dict())
    x = torch.rand(2, 5, 64, 64)
    x[:, 3:] = 0
    x[0, 4, 41, 20] = 0.3  # one prior pixel in image 0, inside output pixel (20, 10); image 1 has no prior
    assert torch.equal(gated(x), plain(x))  # training mode: untouched
    gated.eval(), plain.eval()
    out, free = gated(x), plain(x)
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    near = ((rows - 20).abs() <= 2) & ((cols - 10).abs() <= 2)  # within 2 output pixels, both channels
    assert torch.equal(out[0][:, near], free[0][:, near]) and (out[0][:, ~near] == -20).all()
    assert torch.equal(out[1], free[1])  # no prior found: left as predicted
    with pytest.raises(ValueError, match=r"model\.prior_gate: needs prior channels after R, G, B"):
        UNet(prior_gate=2)


def test_parameter_counts():
    # Measured once and pinned: a change here means the architecture changed.
    assert n_params(UNet(base_width=16, depth=4)) == 1_942_577  # ~1.94M, the default
    assert n_params(UNet(base_width=16, depth=4, norm="group")) == 1_942_577  # same affine params
    assert n_params(UNet(base_width=16, depth=4, norm="none")) == 1_941_105  # conv biases, no norm
    assert n_params(UNet(base_width=16, depth=3)) == 482_737
    # Width scales the conv weights quadratically; 64/4 is the classic ~31.0M U-Net (the seed).
    assert n_params(UNet(base_width=64, depth=4)) == 31_037_633


def test_every_parameter_gets_a_gradient():
    model = UNet(out_channels=2, base_width=4, depth=3, norm="group", dropout=0.1)
    model(torch.rand(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_dropout_only_in_training_mode():
    # Seeded, and with batch norm so the bottleneck is never all-zero after its ReLU (dropout of
    # zeros would change nothing, whatever the test order left in the global RNG).
    torch.manual_seed(0)
    model = UNet(base_width=4, depth=2, norm="batch", dropout=0.5)
    x = torch.rand(2, 3, 16, 16)
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_jit_trace_matches_eager_without_tracer_warnings():
    model = UNet(out_channels=2, base_width=4, depth=3).eval()
    x = torch.rand(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, x)
    other = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(traced(other), model(other))


def test_torch_export_with_dynamic_batch_and_size():
    # torch.export is the front end of the default (dynamo) torch.onnx.export path.
    model = UNet(base_width=4, depth=3).eval()
    k = torch.export.Dim("k", min=1, max=32)
    program = torch.export.export(
        model, (torch.rand(2, 3, 32, 32),), dynamic_shapes=({0: torch.export.Dim("batch"), 2: 8 * k, 3: 8 * k},)
    )
    x = torch.rand(3, 3, 48, 48)
    torch.testing.assert_close(program.module()(x), model(x))


@pytest.mark.parametrize(
    ("block", "scale", "gate"), [("plain", 1, 0), ("depthwise", 1, 0), ("plain", 2, 0), ("plain", 2, 3)]
)
def test_legacy_onnx_export_runs_in_onnxruntime(tmp_path, block, scale, gate):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    channels = 4 if gate else 3
    model = UNet(
        in_channels=channels,
        out_channels=2,
        base_width=4,
        depth=3,
        block=block,
        input_scale=scale,
        output_scale=scale,
        prior_gate=gate,
    ).eval()
    path = tmp_path / "unet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter
        torch.onnx.export(
            model, (torch.rand(1, channels, 32, 32),), str(path), dynamo=False,
            input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}},
        )  # fmt: skip
    x = torch.rand(2, channels, 32, 32)
    if gate:  # a prior in one corner of image 0, none in image 1: gated and ungated outputs both exported
        x[:, 3:] = 0
        x[0, 3, :4, :4] = 1
    (out,) = ort.InferenceSession(str(path)).run(None, {"image": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), model(x), atol=1e-4, rtol=1e-4)
    if gate:
        assert (out[0, :, -4:, -4:] == -20).all() and (out[1] != -20).all()


def test_residual_blocks_add_a_shortcut_where_the_width_changes():
    plain, residual = (
        build_model({"base_width": 8, "depth": 3}, 2),
        build_model({"base_width": 8, "depth": 3, "block": "residual"}, 2),
    )
    # one 1x1 conv + norm per block whose width changes: 3 encoders, the bottleneck and 3 decoders (2w -> w)
    shortcuts = [
        m for m in residual.modules() if hasattr(m, "shortcut") and not isinstance(m.shortcut, torch.nn.Identity)
    ]
    assert len(shortcuts) == 7 and n_params(residual) > n_params(plain)
    x = torch.rand(2, 3, 32, 32)
    assert residual.eval()(x).shape == (2, 2, 32, 32)
    residual.train()(x).sum().backward()
    assert all(p.grad is not None for p in residual.parameters())


def test_depthwise_blocks_separate_every_3x3_conv():  # ONNX export: test_legacy_onnx_export_runs_in_onnxruntime
    plain, depthwise = (build_model({"base_width": 8, "depth": 3, "block": b}, 2) for b in ("plain", "depthwise"))
    convs3 = [m for m in depthwise.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    # 2 convs in each of 3 encoders, the bottleneck and 3 decoders, every one per channel
    assert len(convs3) == 14 and all(c.groups == c.in_channels == c.out_channels for c in convs3)
    assert n_params(depthwise) < n_params(plain) / 3
    x = torch.rand(2, 3, 32, 32)
    depthwise.train()(x).sum().backward()
    assert all(p.grad is not None for p in depthwise.parameters())


def test_build_model_from_params():
    model = build_model(ModelParams(base_width=8, depth=3, norm="group", dropout=0.2), 2)
    assert model.head.out_channels == 2
    assert model.depth == 3
    assert n_params(build_model(ModelParams(), 1)) == n_params(UNet())
    assert n_params(build_model({"depth": 3}, 1)) == n_params(UNet(depth=3))  # a saved model's partial copy
    with pytest.raises(ValueError, match="width"):
        build_model({"width": 8}, 1)
    with pytest.raises(ValueError, match=r"model\.prior_gate: needs prior channels"):
        build_model(ModelParams(prior_gate=2), 1)  # without a prior channel in the data


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"widht": 8}, r"model\.widht: unknown key; did you mean model\.base_width\?"),
        ({"norm": "layer"}, r"model\.norm: expected one of 'batch', 'group', 'none', got 'layer'"),
        ({"depth": 0}, r"model\.depth: expected a value >= 1, got 0"),
        ({"depth": -1}, r"model\.depth: expected a value >= 1, got -1"),
        ({"base_width": "wide"}, r"model\.base_width: expected an integer, got 'wide'"),
        ({"dropout": 1.0}, r"model\.dropout: expected a value < 1, got 1\.0"),
        ({"block": "dense"}, r"model\.block: expected one of 'plain', 'residual', 'depthwise'"),
        ({"prior_gate": -1}, r"model\.prior_gate: expected a value >= 0, got -1"),
        ({"prior_gate": 2}, r"model\.prior_gate: needs prior channels"),
    ],
)
def test_bad_model_params_are_rejected_with_their_key(cfg, message):
    with pytest.raises(ParamError, match=message):
        parse({"model": cfg})
