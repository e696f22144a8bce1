"""ONNX / TorchScript export, parity on face photos (the synthetic faces), latency, the export stage and the
champion gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from eyelip.data.preprocess import decode_image
from eyelip.inference.predictors import OnnxPredictor, TorchPredictor
from eyelip.model.checkpoint import save_model
from eyelip.model.spec import ModelSpec
from eyelip.model.unet import UNet, build_model
from eyelip.release.export import (
    TorchScriptPredictor,
    export_onnx,
    export_torchscript,
    measure_latency,
    parity,
    quantize_int8,
)

REPO = Path(__file__).resolve().parents[1]
SIZE, TARGETS, CFG = 64, ["eyes_lips"], {"base_width": 4, "depth": 2}
SPEC = ModelSpec({"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}, SIZE, network=CFG)
FACES = (3, 7, 21, 2001, 0, 1)


def small_model(seed: int = 0) -> UNet:
    """Random weights with non-trivial BatchNorm statistics (eval mode uses them, export folds them)."""
    torch.manual_seed(seed)
    model = build_model(CFG, out_channels=len(TARGETS))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def faces(root: Path, ids: tuple[int, ...] = FACES, size: int = SIZE) -> np.ndarray:
    return np.stack([decode_image((root / "CelebA-HQ-img" / f"{i}.jpg").read_bytes(), size, f"{i}.jpg") for i in ids])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    model = small_model()
    paths = {"pt": root / "model.pt", "onnx": root / "model.onnx", "ts": root / "model.ts"}
    save_model(paths["pt"], model, SPEC, epoch=1, val_iou=0.5)
    export_onnx(model, paths["onnx"], SPEC, {"epoch": 1, "val_iou": 0.5})
    export_torchscript(model, paths["ts"], SIZE)
    return paths


def test_onnx_and_torchscript_match_pytorch_on_faces(exported: dict[str, Path], synthetic: Path) -> None:
    images = faces(synthetic)
    reference = TorchPredictor(exported["pt"])
    for candidate in (OnnxPredictor(exported["onnx"]), TorchScriptPredictor(exported["ts"], SIZE, TARGETS)):
        result = parity(reference, candidate, images, batch_size=4)
        assert result["images"] == len(images)
        assert result["max_abs_prob_diff"] < 1e-4
        assert result["identical_mask_fraction"] > 0.999


def test_parity_reports_a_disagreement(exported: dict[str, Path], synthetic: Path) -> None:
    reference = TorchPredictor(exported["pt"])
    result = parity(reference, lambda x: 1.0 - reference(x), faces(synthetic, (3,)))
    assert result["max_abs_prob_diff"] > 0.01
    assert result["identical_mask_fraction"] < 0.5


def test_onnx_runs_with_onnxruntime_only_and_carries_metadata(exported: dict[str, Path]) -> None:
    """Without torch or eyelip importable: any batch size, and other multiples of 4 (dynamic H/W)."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = sys.modules["eyelip"] = None  # importing either now fails
        import numpy as np, onnxruntime as ort
        session = ort.InferenceSession({str(exported["onnx"])!r}, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        shapes = {{}}
        for shape in [(1, 3, 64, 64), (3, 3, 64, 64), (2, 3, 96, 128)]:
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            shapes[str(shape)] = list(session.run(["logits"], {{"image": x}})[0].shape)
        print(json.dumps({{"meta": meta, "shapes": shapes}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    meta = result["meta"]
    assert int(meta["size"]) == SIZE and json.loads(meta["targets"]) == TARGETS
    assert meta["normalisation"] == "RGB and prior channels /255, NCHW" and float(meta["threshold"]) == 0.5
    assert "bilinear" in meta["mask_resize_rule"] and json.loads(meta["model"]) == CFG
    assert meta["epoch"] == "1" and meta["val_iou"] == "0.5"
    assert result["shapes"] == {
        "(1, 3, 64, 64)": [1, 1, 64, 64],
        "(3, 3, 64, 64)": [3, 1, 64, 64],
        "(2, 3, 96, 128)": [2, 1, 96, 128],
    }


def test_onnx_dynamic_size_matches_pytorch(exported: dict[str, Path], synthetic: Path) -> None:
    x = torch.from_numpy(faces(synthetic, (3, 2001), size=96).transpose(0, 3, 1, 2) / np.float32(255))
    with torch.no_grad():
        expected = small_model()(x).numpy()
    (logits,) = OnnxPredictor(exported["onnx"]).session.run(None, {"image": x.numpy()})
    assert np.abs(logits - expected).max() < 1e-4


def test_torchscript_loads_without_eyelip(exported: dict[str, Path]) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.modules["eyelip"] = None
        import torch
        module = torch.jit.load({str(exported["ts"])!r})
        print(tuple(module(torch.rand(2, 3, 64, 64)).shape))
    """)
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(2, 1, 64, 64)"


def test_latency_covers_every_runtime_and_batch(exported: dict[str, Path], tmp_path: Path, synthetic: Path) -> None:
    int8 = tmp_path / "model.int8.onnx"
    quantize_int8(exported["onnx"], int8, faces(synthetic, (0, 1, 2, 4)))
    result = measure_latency(
        small_model(), exported["onnx"], exported["ts"], SIZE, batch_sizes=(1, 4), repeats=3, int8_path=int8
    )
    formats = {"torch_eager_nchw", "torch_eager_channels_last", "onnxruntime", "torchscript", "onnxruntime_int8"}
    assert set(result["latency_ms"]) == {"torch_eager", *formats}
    assert all(set(ms) == {"b1", "b4"} and min(ms.values()) > 0 for ms in result["latency_ms"].values())
    for key, ms in result["latency_ms"]["torch_eager"].items():  # the faster memory format, as recorded
        assert ms == result["latency_ms"][f"torch_eager_{result['torch_eager']['memory_format'][key]}"][key]
        assert ms == min(result["latency_ms"][f"torch_eager_{f}"][key] for f in ("nchw", "channels_last"))
    assert set(result["speedup_vs_eager"]) == {"onnxruntime", "torchscript", "onnxruntime_int8"}
    assert result["onnxruntime_options"]["intra_op_num_threads"] == result["threads"] == torch.get_num_threads()


def test_int8_model_keeps_the_metadata_and_tracks_the_fp32_model(
    exported: dict[str, Path], tmp_path: Path, synthetic: Path
) -> None:
    int8 = tmp_path / "model.int8.onnx"
    quantize_int8(exported["onnx"], int8, faces(synthetic, (0, 1, 2, 4)))
    predictor = OnnxPredictor(int8)  # eyelip predict and evaluate read it like the fp32 model
    assert predictor.spec == SPEC and predictor.session.get_modelmeta().custom_metadata_map["quantization"].startswith(
        "int8 QDQ"
    )
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    result = parity(OnnxPredictor(exported["onnx"]), predictor, faces(synthetic), batch_size=4)
    assert 0 < result["max_abs_prob_diff"] < 0.2 and result["identical_mask_fraction"] > 0.95


# --- the export stage and the registry gate, in one real SQLite MLflow store ----------------------

STAGE_SCRIPT = """
import json, runpy, sys
import mlflow
from eyelip.params.whole import parse
from eyelip.tracking import store as tracking

run = tracking.start_run(parse({"tracking": {"experiment": "eyelip-test"}}))
tracking.write_run_file(run)
mlflow.end_run()
try:
    runpy.run_path("pipeline/export.py", run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
client = mlflow.MlflowClient()
print("RESULT " + json.dumps({
    "aliases": client.get_registered_model("eyelip").aliases,
    "version_tags": client.get_model_version("eyelip", "1").tags,
    "run": client.get_run(run.info.run_id).data.metrics,
    "artifacts": [a.path for a in client.list_artifacts(run.info.run_id)]}))
"""


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory: pytest.TempPathFactory, synthetic: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """pipeline/export.py in a minimal project (faces at 64 px); the gate itself: test_registry.py."""
    root = tmp_path_factory.mktemp("project")
    (root / "pipeline").mkdir()
    (root / "pipeline" / "export.py").write_text((REPO / "pipeline" / "export.py").read_text())
    (root / "params.yaml").write_text(
        "tracking:\n  experiment: eyelip-test\nexport:\n  registered_model: eyelip\n  latency_repeats: 1\n"
    )
    ids = list(range(8))
    (root / "data" / "resized").mkdir(parents=True)
    np.save(root / "data" / "resized" / "images.npy", faces(synthetic, tuple(ids)))
    np.save(root / "data" / "resized" / "masks.npy", np.zeros((len(ids), 1, SIZE, SIZE), np.uint8))
    (root / "data" / "resized" / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    SPEC.data.write(root / "data" / "resized")
    (root / "data" / "fused").mkdir()  # native masks, for re-scoring a champion on these test faces
    np.save(root / "data" / "fused" / "masks.npy", np.zeros((len(ids), 1, SIZE, SIZE // 8), np.uint8))
    (root / "data" / "fused" / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "data" / "fused" / "meta.json").write_text(
        json.dumps({"targets": SPEC.target_parts, "rule": "union", "mask_size": [SIZE, SIZE]})
    )
    (root / "data" / "split").mkdir()
    (root / "data" / "split" / "test.txt").write_text("3\n5\n6\n")
    (root / "data" / "split" / "train.txt").write_text("0\n1\n2\n4\n")  # the int8 model's calibration
    save_model(root / "models" / "model.pt", small_model(), SPEC, epoch=2, val_iou=0.6)
    (root / "metrics").mkdir()
    (root / "metrics" / "evaluate.json").write_text(json.dumps({"iou": 0.8, "iou_native": 0.7}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    env.pop("DVC_ROOT", None)
    proc = subprocess.run(
        [sys.executable, "-c", STAGE_SCRIPT], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, proc


def result_of(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def test_export_stage_writes_models_metrics_and_logs_to_the_training_run(stage_run) -> None:
    root, proc = stage_run
    assert all((root / "models" / name).is_file() for name in ("model.onnx", "model.ts", "model.int8.onnx"))
    assert not [p for p in (root / "models").iterdir() if p.name.startswith(".")]  # no temporaries left
    metrics = json.loads((root / "metrics" / "export.json").read_text())
    assert metrics["parity"]["onnxruntime"]["images"] == 3
    assert metrics["parity"]["onnxruntime"]["max_abs_prob_diff"] < 1e-4
    assert set(metrics["latency_ms"]["torchscript"]) == {"b1", "b32"}
    int8 = metrics["int8"]  # scored on the 3 test faces (no foreground: IoU 1 only for an empty prediction)
    assert int8["calibration_images"] == 4 and int8["iou_model"] == 0.8 and int8["iou_native_model"] == 0.7
    assert int8["iou_cost"] == pytest.approx(0.8 - int8["iou"], abs=1e-6)
    result = result_of(proc)
    assert "export.json" in result["artifacts"]
    assert "export_onnxruntime_max_abs_prob_diff" in result["run"] and "latency_ms_onnxruntime_b32" in result["run"]
    assert (
        "registry 'eyelip': v1 promoted to champion (no champion before): test IoU 0.8000 on test split" in proc.stdout
    )
    assert result["aliases"] == {"champion": 1, "candidate": 1}
    tags = result["version_tags"]
    assert tags["targets"] == json.dumps(TARGETS) and tags["test_images"] == "3" and len(tags["test_split"]) == 12
    assert ModelSpec.from_strings(tags, "tags") == SPEC, "the version's tags hold the model's contract"


def test_export_stage_needs_the_evaluate_metrics(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("export:\n  registered_model: eyelip\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "pipeline" / "export.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "metrics/evaluate.json: not found" in proc.stderr and "dvc repro evaluate" in proc.stderr
