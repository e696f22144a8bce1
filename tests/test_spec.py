"""The model contract (eyelip.model.spec): one description, written and read the same way in the model
file, the ONNX metadata and the registry's tags; files written by older versions still load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from eyelip.data.source import Source
from eyelip.data.spec import DataSpec
from eyelip.errors import DataError, EyelipError
from eyelip.evaluation.evaluate import source_batches
from eyelip.inference.predictors import OnnxPredictor, TorchPredictor
from eyelip.model.checkpoint import MODEL_FORMAT, load_model, save_model
from eyelip.model.spec import DEFAULT_TARGET_PARTS, ModelSpec
from eyelip.model.unet import build_model
from eyelip.release.export import export_onnx
from eyelip.release.registry import Lineage, layout_name

TWO = {"eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}
NETWORK = {"base_width": 4, "depth": 2}
SPEC = ModelSpec(
    TWO, 32, "label_map", {"skin": ["skin"]}, input_scale=2, train_scale=2, prior="facemesh", network=NETWORK
)


def test_every_form_reads_back_the_same_spec() -> None:
    assert ModelSpec.from_dict(SPEC.to_dict(), "file") == SPEC
    assert ModelSpec.from_strings(SPEC.to_strings(), "onnx") == SPEC
    assert Lineage.from_tags(Lineage(SPEC, "d", "abc", 3).tags()) == Lineage(SPEC, "d", "abc", 3)
    assert ModelSpec.of(SPEC.data, NETWORK) == SPEC and SPEC.data == DataSpec.from_dict(SPEC.to_dict(), "meta")
    assert SPEC.unet_kwargs() == {**NETWORK, "in_channels": 5, "out_channels": 2, "input_scale": 2, "output_scale": 2}
    strings = SPEC.to_strings()  # for readers without eyelip: strings plain, the rest JSON
    assert (strings["prior"], strings["input_size"]) == ("facemesh", "64")
    assert json.loads(strings["targets"]) == ["eyes", "lips"]


def old_model_file(path: Path, **keys: object) -> torch.nn.Module:
    """A model file in the flat layout of earlier versions (no format number), with only ``keys``."""
    torch.manual_seed(0)
    model = build_model(NETWORK, out_channels=1).eval()
    torch.save(
        {
            "state_dict": model.state_dict(),
            "model": NETWORK,
            "input": "RGB float in [0, 1], NCHW",
            "targets": ["eyes_lips"],
            "size": 32,
            "epoch": 4,
            "val_iou": 0.5,
            **keys,
        },
        path,
    )
    return model


@pytest.mark.parametrize(
    "keys",
    [
        {},  # the oldest: targets and size only
        {"target_parts": DEFAULT_TARGET_PARTS, "rule": "union"},  # the first train stage's
        {"target_parts": DEFAULT_TARGET_PARTS, "rule": "union", "input_size": 32, "train_size": 32, "prior": "none"},
    ],
)
def test_model_files_of_older_versions_load_with_what_they_were_trained_with(tmp_path: Path, keys: dict) -> None:
    original = old_model_file(tmp_path / "model.pt", **keys)
    model, file = load_model(tmp_path / "model.pt")
    assert file.spec == ModelSpec(DEFAULT_TARGET_PARTS, 32, network=NETWORK) and (file.epoch, file.val_iou) == (4, 0.5)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)
    # Written again, it is a current file with the same contract.
    save_model(tmp_path / "again.pt", model, file.spec, file.epoch, file.val_iou)
    assert torch.load(tmp_path / "again.pt", weights_only=True)["format"] == MODEL_FORMAT
    assert TorchPredictor(tmp_path / "again.pt").spec == file.spec


def test_a_model_file_of_a_newer_format_or_with_mismatched_weights_is_refused(tmp_path: Path) -> None:
    old_model_file(tmp_path / "newer.pt", format=MODEL_FORMAT + 1)
    with pytest.raises(DataError, match=rf"newer.pt: model file format {MODEL_FORMAT + 1} is newer .*upgrade eyelip"):
        load_model(tmp_path / "newer.pt")
    old_model_file(tmp_path / "wide.pt", model={**NETWORK, "base_width": 8})
    with pytest.raises(
        DataError,
        match=r"wide.pt: the weights do not fit the recorded network \(size mismatch for "
        r"encoders.0.0.weight: .*, and \d+ more\); re-train it$",
    ):
        load_model(tmp_path / "wide.pt")


def test_onnx_models_exported_by_older_versions_load(tmp_path: Path, synthetic: Path) -> None:
    torch.manual_seed(0)
    model = build_model(NETWORK, out_channels=2).eval()
    export_onnx(model, tmp_path / "model.onnx", ModelSpec(TWO, 32, network=NETWORK), {"epoch": 1})
    proto = onnx.load(str(tmp_path / "model.onnx"))
    # The metadata the first export stage wrote: no input or training size, prior, rule or parts.
    old = {"size": "32", "targets": json.dumps(list(TWO)), "threshold": "0.5", "model": json.dumps(NETWORK)}
    del proto.metadata_props[:]
    for key, value in old.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp_path / "old.onnx"))
    predictor = OnnxPredictor(tmp_path / "old.onnx")
    assert (predictor.size, predictor.input_size, predictor.prior, predictor.rule) == (32, 32, "none", "union")
    # Parts unknown for targets other than the default one: what evaluating on raw data refuses, by name.
    assert predictor.targets == ["eyes", "lips"] and predictor.target_parts == {"eyes": [], "lips": []}
    with pytest.raises(
        EyelipError,
        match=r"the model's target_parts are invalid: target_parts.eyes: expected a "
        r"non-empty list of parts, got \[\]; re-train or re-export it",
    ):
        source_batches(Source(synthetic), [0], predictor, batch_size=1, n_jobs=1)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(predictor(images), OnnxPredictor(tmp_path / "model.onnx")(images))


def test_registry_tags_of_older_versions_keep_their_lineage_and_registered_name() -> None:
    old_tags = {
        "targets": '["eyes", "lips"]',
        "target_parts": json.dumps(TWO),
        "input_channels": "5",
        "input_size": "256",
        "size": "128",
        "prior": "facemesh_flip",
        "data_version": "abc",
        "test_split": "0123456789ab",
        "test_images": "101",
        "test_iou": "0.8",
    }
    old = Lineage.from_tags(old_tags)
    assert old.spec.layout() == {
        "targets": ["eyes", "lips"],
        "target_parts": TWO,
        "input_channels": 5,
        "input_size": 256,
        "size": 128,
        "prior": "facemesh_flip",
    }
    assert (old.data_version, old.test_split, old.test_images) == ("abc", "0123456789ab", 101)
    # The name the registry gave this layout before the contract (its hash covers the same layout keys).
    assert layout_name("eyelip", old) == "eyelip-eyes.lips-256to128-facemesh_flip-932e3d"
    now = Lineage(ModelSpec(TWO, 128, input_scale=2, prior="facemesh_flip", network=NETWORK))
    assert not now.differences(old) and layout_name("eyelip", now) == layout_name("eyelip", old)
    assert Lineage.from_tags({"test_iou": "0.8"}) is None, "registered before lineage: read from its ONNX model"


def test_a_model_that_does_not_fit_the_data_is_named_with_every_difference() -> None:
    data = DataSpec(TWO, 32, "union", input_scale=2, train_scale=2, prior="facemesh")
    with pytest.raises(
        DataError,
        match=r"models/model.pt does not fit the data \(rule label_map vs union, model vs "
        r"data\); re-run `dvc repro`",
    ):
        SPEC.check_fits(data, "models/model.pt")
    SPEC.check_fits(DataSpec(TWO, 32, "label_map", input_scale=2, train_scale=1, prior="facemesh"), "m")
