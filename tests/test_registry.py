"""The registry gate in a real SQLite MLflow store, with tiny real ONNX models scored on real pipeline
data (the built-in synthetic sample, fused and resized by the stages' own code)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from eyelip.data.dataset import ResizedArrays
from eyelip.data.fuse import FusedMasks, fuse_dataset
from eyelip.data.resize import resize_dataset
from eyelip.data.source import Source
from eyelip.data.synthetic import generate_sample
from eyelip.evaluation.evaluate import TestSplit
from eyelip.inference.predictors import OnnxPredictor
from eyelip.model.spec import ModelSpec
from eyelip.model.unet import build_model
from eyelip.params import whole as P
from eyelip.release.export import export_onnx
from eyelip.release.pyfunc import log_pyfunc
from eyelip.release.registry import Lineage, champion_scorer, layout_name, model_digest, publish, register, rescore
from eyelip.tracking.store import write_run_file

SIZE = 32
ONE = {"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}
TWO = {"eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}


def eval_set(root: Path, seed: int, targets: dict[str, list[str]]) -> TestSplit:
    """The last 6 of 10 synthetic faces (seed ``seed``) as the evaluate stage reads them."""
    generate_sample(root / "sample.zip", n=10, seed=seed, image_size=64, mask_size=64)
    source = Source(root / "sample.zip")
    fuse_dataset(source, root / "fused", targets, n_jobs=1)
    resize_dataset(source, root / "fused", root / "resized", SIZE, n_jobs=1)
    return TestSplit(ResizedArrays(root / "resized"), FusedMasks(root / "fused"), np.arange(4, 10))


def onnx_model(path: Path, targets: dict[str, list[str]], bias: float, **meta: str) -> Path:
    """A tiny U-Net whose output bias decides how much it marks (a large bias: everything)."""
    torch.manual_seed(0)
    model = build_model({"base_width": 4, "depth": 2}, out_channels=len(targets)).eval()
    with torch.no_grad():
        model.head.bias.fill_(bias)
    export_onnx(model, path, ModelSpec(targets, SIZE, network={"base_width": 4, "depth": 2}), dict(meta))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("registry")
    old = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("registry", (root / "mlruns").as_uri()))
    data = {
        "a": eval_set(root / "a", 0, ONE),
        "b": eval_set(root / "b", 1, ONE),
        "c": eval_set(root / "c", 2, ONE),
        "two": eval_set(root / "two", 0, TWO),
    }
    models = {
        "all": onnx_model(root / "all.onnx", ONE, 20.0),
        "some": onnx_model(root / "some.onnx", ONE, 0.0),
        "two": onnx_model(root / "two.onnx", TWO, 20.0),
    }
    yield root, data, models
    mlflow.set_tracking_uri(old or "")


def logged(path: Path) -> str:
    with mlflow.start_run():
        return log_pyfunc(path, OnnxPredictor(path).targets, _grey_png()).model_uri


def _grey_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (128, 128, 128)).save(out, format="PNG")
    return out.getvalue()


def lineage(model: Path, test: TestSplit, data_version: str = "d") -> Lineage:
    return Lineage(
        OnnxPredictor(model).spec, data_version=data_version, test_split=test.digest(), test_images=len(test)
    )


def gate(model: Path, test: TestSplit, base: str, iou: float, capsys) -> tuple:
    decision = register(lambda: logged(model), base, iou, lineage(model, test), champion_scorer(test))
    line = capsys.readouterr().out.strip().splitlines()
    return decision, line


def test_same_test_data_compares_the_recorded_numbers(store, capsys) -> None:
    _, data, models = store
    first, _ = gate(models["some"], data["a"], "same", 0.8, capsys)
    assert (first.promoted, first.compared, first.version) == (True, "no champion", 1)
    worse, lines = gate(models["all"], data["a"], "same", 0.7, capsys)
    assert (worse.promoted, worse.champion, worse.compared) == (False, 1, "same test set")
    split = data["a"].digest()
    assert lines == [
        (
            f"registry 'same': kept v1 as champion: test IoU 0.8000 > v2's 0.7000, on the same test split "
            f"{split} (6 images, data d); v2 is candidate only"
        )
    ]
    tie, lines = gate(models["all"], data["a"], "same", 0.8, capsys)
    assert (tie.promoted, tie.champion, tie.version) == (False, 1, 3)
    assert lines == [
        (
            f"registry 'same': kept v1 as champion: a tie, test IoU 0.800000 for both, on the same test "
            f"split {split} (6 images, data d); a tie keeps the earlier version; v3 is candidate only"
        )
    ]
    better, lines = gate(models["all"], data["a"], "same", 0.9, capsys)
    assert (better.promoted, better.champion, better.previous_champion_test_iou) == (True, 4, 0.8)
    assert lines == [
        (
            f"registry 'same': v4 promoted to champion: test IoU 0.9000 > v1's 0.8000, on the same test "
            f"split {split} (6 images, data d)"
        )
    ]
    aliases = MlflowClient().get_registered_model("same").aliases
    assert aliases == {"champion": 4, "candidate": 4}
    tags = MlflowClient().get_model_version("same", "4").tags
    assert tags["test_split"] == split and tags["targets"] == '["eyes_lips"]' and tags["input_size"] == str(SIZE)
    assert tags["data_version"] == "d" and tags["prior"] == "none" and tags["test_iou"] == "0.900000"


def test_a_champion_tested_on_other_data_is_rescored_on_the_candidates(store, capsys) -> None:
    _, data, models = store
    gate(models["all"], data["a"], "other", 0.99, capsys)  # a number from other data, higher than any here
    on_b = rescore(OnnxPredictor(models["all"]), data["b"])
    assert 0 < on_b < 0.5  # all-foreground: the target share of b's test faces
    beaten, lines = gate(models["some"], data["b"], "other", on_b + 0.01, capsys)
    assert beaten.compared == "re-scored on this test set" and beaten.promoted
    assert beaten.previous_champion_test_iou == pytest.approx(on_b, abs=1e-6)  # as recorded: 6 decimals
    (line,) = lines
    assert line.startswith(
        f"registry 'other': v2 promoted to champion: test IoU {on_b + 0.01:.4f} > v1's {on_b:.4f}, "
        f"v1 re-scored on v2's test split {data['b'].digest()} (6 images, data d); it was tested "
        f"on test split {data['a'].digest()}"
    ), line
    # On c's data, v2 (tested on b) is re-scored on c in turn; a lower number keeps it.
    on_c = rescore(OnnxPredictor(models["some"]), data["c"])
    kept, lines = gate(models["all"], data["c"], "other", max(on_c - 0.01, 0.0), capsys)
    assert (kept.promoted, kept.champion, kept.compared) == (False, 2, "re-scored on this test set")
    assert "kept v2 as champion" in lines[0] and "v2 re-scored on v3's test split" in lines[0]
    assert "v3 is candidate only" in lines[0]
    # Back on a's data the champion is the best version tested on a: v1's recorded 0.99 beats v2 re-scored on a.
    back, lines = gate(models["all"], data["a"], "other", 0.5, capsys)
    assert (back.promoted, back.champion, back.compared) == (False, 1, "same test set")
    assert lines[0].startswith(
        "registry 'other': v1 is champion (was v2): test IoU 0.9900 > v4's 0.5000, on the "
        f"same test split {data['a'].digest()}"
    ), lines[0]


def test_a_champion_registered_without_lineage_is_rescored(store, capsys) -> None:
    """Versions registered before lineage tags existed: the layout comes from the ONNX metadata."""
    _, data, models = store
    version = mlflow.register_model(logged(models["all"]), "legacy", tags={"test_iou": "0.99"})
    MlflowClient().set_registered_model_alias("legacy", "champion", version.version)
    decision, lines = gate(models["some"], data["b"], "legacy", 0.5, capsys)
    assert decision.compared == "re-scored on this test set"
    assert "it was tested on unrecorded data" in lines[0]
    on_b = rescore(OnnxPredictor(models["all"]), data["b"])
    assert decision.previous_champion_test_iou == pytest.approx(on_b, abs=1e-6)  # as recorded: 6 decimals


def test_another_layout_is_never_compared_and_gets_its_own_name(store, capsys) -> None:
    _, data, models = store
    gate(models["all"], data["a"], "layouts", 0.5, capsys)
    decision, lines = gate(models["two"], data["two"], "layouts", 0.1, capsys)  # lower, but not comparable
    name = layout_name("layouts", lineage(models["two"], data["two"]))
    assert name.startswith("layouts-eyes.lips-32to32-")
    assert lines[0] == (
        f"registry 'layouts': champion v1 has another layout (targets ['eyes', 'lips'] vs "
        f"['eyes_lips']; target_parts {TWO} vs {ONE}): not compared; this model goes to {name!r}"
    )
    assert lines[1].startswith(f"registry {name!r}: v1 promoted to champion (no champion before)")
    assert (decision.registered_model, decision.promoted, decision.version) == (name, True, 1)
    client = MlflowClient()
    assert client.get_registered_model("layouts").aliases["champion"] == 1
    assert client.get_model_version_by_alias(name, "champion").tags["targets"] == '["eyes", "lips"]'
    # The next two-target model goes to the same layout name and is compared there.
    again, lines = gate(models["two"], data["two"], "layouts", 0.05, capsys)
    assert (again.registered_model, again.compared, again.promoted) == (name, "same test set", False)
    assert lines[0].endswith(f"this model goes to {name!r}") and lines[1].startswith(f"registry {name!r}: kept v1")


def test_a_reexport_of_the_same_model_adds_no_version_and_keeps_the_champion(
    store, capsys, tmp_path: Path, monkeypatch
) -> None:
    """The export stage's publish, twice on one training run's model (as `dvc exp run` does when only
    export params change): the second export reuses v1; the version points at the run that trained it."""
    _, data, models = store
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow.get_tracking_uri())
    monkeypatch.delenv("DVC_ROOT", raising=False)
    with mlflow.start_run(run_name="trained") as run:  # the training stage's run, in models/run.json
        pass
    write_run_file(run)
    params = P.parse({"export": {"registered_model": "reexport"}, "tracking": {"experiment": "registry"}})
    (tmp_path / "export.json").write_text("{}")
    summary = {"parity": {}, "latency_ms": {}}
    iou = 0.25223449  # stored as 0.252234: compared at full precision, it beat its own record

    def export(onnx: Path) -> tuple:
        decision = publish(params, onnx, tmp_path / "export.json", summary, iou, lineage(onnx, data["a"]), data["a"])
        return decision, capsys.readouterr().out

    first, _ = export(models["some"])
    # The same weights exported again: other metadata (the file names another run), the same graph.
    again_file = onnx_model(tmp_path / "again.onnx", ONE, 0.0, mlflow_run_id="another")
    assert again_file.read_bytes() != models["some"].read_bytes()
    assert model_digest(again_file) == model_digest(models["some"])
    monkeypatch.setenv("DVC_EXP_NAME", "export-only")
    again, out = export(again_file)
    assert (first.version, again.version, again.champion, again.reused, again.promoted) == (1, 1, 1, True, False)
    assert (
        f"registry 'reexport': v1 already holds this model (digest {model_digest(again_file)}) tested on the same "
        f"test split {data['a'].digest()}" in out
    )
    assert "registry 'reexport': v1 stays champion: test IoU 0.2522" in out
    assert (
        f"experiment 'export-only' trained no model: its model is the one MLflow run 'trained' ({run.info.run_id})"
        in out
    )
    client = MlflowClient()
    (version,) = client.search_model_versions("name = 'reexport'")
    assert version.run_id == version.tags["mlflow_run_id"] == run.info.run_id
    assert client.get_run(run.info.run_id).data.tags["registry_version"] == "1"

    # Another model (another digest) with the same score: a new version, and the tie keeps the champion.
    tie, out = export(onnx_model(tmp_path / "other.onnx", ONE, 0.5))
    assert (tie.version, tie.champion, tie.promoted) == (2, 1, False)
    assert "kept v1 as champion: a tie, test IoU 0.252234 for both" in out
