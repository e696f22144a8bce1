"""`eyelip results`: a markdown table from a real (small) MLflow store, grouped by recipe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from eyelip.cli import main
from eyelip.errors import EyelipError
from eyelip.tracking.results import Run, _headline, load_runs, render

# As tracking logs them: data.targets flattened, one JSON list per target.
TARGETS = {"data.targets.eyes": json.dumps(["l_eye", "r_eye"]), "data.targets.lips": json.dumps(["u_lip", "l_lip"])}


def log_run(name: str, fold: int, width: int, combined: float, eyes: float, lips: float) -> None:
    test_iou = (eyes + lips) / 2  # the macro mean over targets, as evaluate logs it
    with mlflow.start_run(run_name=name):
        mlflow.log_params(
            {
                "split.folds": 5,
                "split.fold": fold,
                "model.base_width": width,
                "train.threads": 2,
                "train.epochs": 25,
                **TARGETS,
            }
        )
        mlflow.log_metrics(
            {
                "test_iou": test_iou,
                "test_iou_combined": combined,
                "test_iou_eyes": eyes,
                "test_iou_lips": lips,
                "best_val_iou": test_iou + 0.01,
                "train_minutes": 4.0 + fold,
                "train_images_per_second": 50.0,
            }
        )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One store for the module: creating a SQLite store runs migrations (~8 s)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("cv")
        log_run("w16-fold0", 0, 16, 0.805, 0.76, 0.84)
        log_run("w16-fold1", 1, 16, 0.825, 0.78, 0.86)
        log_run("w24", 0, 24, 0.835, 0.80, 0.86)
        with mlflow.start_run(run_name="crashed"):  # no test metrics: left out
            mlflow.log_params({"model.base_width": 32})
        yield uri


def test_folds_of_a_recipe_share_a_row_with_mean_and_std(store: str) -> None:
    runs = load_runs("cv")
    assert [r.name for r in runs] == ["w16-fold0", "w16-fold1", "w24"]
    text = render("cv", runs)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == 2
    assert rows[0].startswith(
        "| `model.base_width=16` | w16-fold0, w16-fold1 | 0/5, 1/5 | 4.5 ± 0.7 | 50 ± 0 | – | 0.815 ± 0.014 |"
    )
    assert "| 0.770 ± 0.014 | 0.850 ± 0.014 | 0.820 ± 0.014 |" in rows[0]
    assert rows[1].startswith("| `model.base_width=24` | w24 | 0/5 | 4.0 | 50 | – | 0.835 | 0.800 | 0.860 | 0.840 |")
    assert "test IoU eyes | test IoU lips" in text
    assert "`train.epochs=25`" in text.split("Shared by all rows:")[1]
    assert '`data.targets=eyes=["l_eye", "r_eye"]; lips=["u_lip", "l_lip"]`' in text.split("Shared by all rows:")[1]


def test_one_mask_iou_is_test_iou_or_the_combined_targets() -> None:
    one = Run("one", {"data.targets.eyes_lips": json.dumps(["l_eye", "r_eye", "u_lip", "l_lip"])}, {"test_iou": 0.8})
    two = Run("two", TARGETS, {"test_iou": 0.7, "test_iou_combined": 0.81})
    assert _headline([one, two]) == [0.8, 0.81]


def test_command_writes_the_file_and_names_a_missing_experiment(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "docs" / "results.md"
    assert main(["results", "--experiment", "cv", "--out", str(out)]) == 0
    assert out.read_text().startswith("# Results: MLflow experiment `cv`")
    with pytest.raises(EyelipError, match=r"no MLflow experiment 'nope' .* experiments: Default, cv"):
        load_runs("nope")


def test_aux_targets_read_as_one_change_and_older_runs_had_none() -> None:
    aux = {"data.aux_targets.skin": json.dumps(["skin"]), "data.aux_targets.brows": json.dumps(["l_brow", "r_brow"])}
    older = Run("older", {**TARGETS, "model.depth": "4"}, {})  # logged before aux targets existed
    none = Run("none", {**TARGETS, "model.depth": "4", "data.aux_targets": "{}", "train.aux_weight": "0.5"}, {})
    with_aux = Run("aux", {**TARGETS, **aux, "model.depth": "4", "train.aux_weight": "0.5"}, {})
    assert older.recipe == none.recipe, "no auxiliary targets: the same recipe, whatever their (unused) weight"
    recipe = dict(with_aux.recipe)
    assert recipe["data.aux_targets"] == 'skin=["skin"]; brows=["l_brow", "r_brow"]'
    assert recipe["train.aux_weight"] == "0.5" and with_aux.targets == ["eyes", "lips"]


def test_the_ledger_keeps_runs_that_the_store_has_lost(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.md"
    assert main(["results", "--experiment", "cv", "--out", str(out)]) == 0
    ledger = json.loads(out.with_suffix(".json").read_text())
    assert [r["name"] for r in ledger["runs"]] == ["w16-fold0", "w16-fold1", "w24"]
    assert set(ledger["runs"][0]["metrics"]) == {
        "test_iou",
        "test_iou_combined",
        "test_iou_eyes",
        "test_iou_lips",
        "best_val_iou",
        "train_minutes",
        "train_images_per_second",
    }
    before = out.read_text()

    # A new, empty store (the old one deleted): the table still lists every run, from the ledger.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'new.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        mlflow.set_experiment("cv")
        log_run("w32", 0, 32, 0.845, 0.81, 0.87)
        assert main(["results", "--experiment", "cv", "--out", str(out)]) == 0
    finally:
        mlflow.set_tracking_uri(store)  # the module's store, for the tests that follow (it sets the variable too)
    assert "4 runs (3 from" in capsys.readouterr().out
    table = out.read_text()
    assert "`model.base_width=32`" in table and all(line in table for line in before.splitlines()[6:8])
    assert [r["name"] for r in json.loads(out.with_suffix(".json").read_text())["runs"]][-1] == "w32"

    assert main(["results", "--experiment", "other", "--out", str(out)]) != 0
    assert "the ledger of experiment 'cv', not 'other'; pass another --ledger" in capsys.readouterr().err
    out.with_suffix(".json").write_text("{")
    assert main(["results", "--experiment", "cv", "--out", str(out)]) != 0
    assert "results.json: not a results ledger" in capsys.readouterr().err
    assert out.read_text() == table  # nothing written over
