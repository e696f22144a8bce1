"""Result-neutral settings (params.yaml's `runtime:` section) have one definition: the data stages and
training read them from there, the resume fingerprint ignores them, `eyelip results` groups runs across
them, and an old params file that still has them elsewhere is told where they went."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eyelip.errors import ParamError
from eyelip.params import core, whole
from eyelip.params.runtime import RuntimeParams
from eyelip.tracking.results import Run
from eyelip.training.loop import TrainConfig

REPO = Path(__file__).resolve().parents[1]
RECIPE = {"model": {"base_width": 8, "depth": 3}, "train": {"epochs": 1, "batch_size": 4, "lr": 0.003, "seed": 0}}


@pytest.mark.parametrize("old, new", sorted(core.MOVED.items()))
def test_an_old_params_file_names_the_moved_key(tmp_path: Path, old: str, new: str) -> None:
    section, key = old.split(".")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, section: {**RECIPE.get(section, {}), key: 1}}))
    with pytest.raises(ParamError, match=rf"^{old}: moved to {new} in "):
        whole.load(path)


def test_the_project_params_have_every_runtime_setting_in_one_section() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert {new.split(".")[1] for new in core.MOVED.values()} == set(params[core.RUNTIME])
    assert set(RuntimeParams.model_fields) == set(params[core.RUNTIME])


def test_the_resume_fingerprint_ignores_runtime_settings_only() -> None:
    def config(recipe: dict) -> TrainConfig:
        return TrainConfig.from_params(whole.parse(recipe))

    base = config(RECIPE).fingerprint("data")
    fast = config({**RECIPE, "runtime": {"threads": 1, "device": "cpu", "compile": True, "distributed": False}})
    assert (fast.runtime.threads, fast.runtime.device, fast.runtime.compile) == (1, "cpu", True)  # from runtime:
    assert fast.fingerprint("data") == base
    other = config({**RECIPE, "train": {**RECIPE["train"], "lr": 0.01}})
    assert other.fingerprint("data") != base
    assert config(RECIPE).fingerprint("other data") != base


def test_results_group_runs_across_runtime_settings_old_names_included() -> None:
    targets = {"data.targets.eyes_lips": '["l_eye", "r_eye", "u_lip", "l_lip"]'}
    new = Run("new", {**targets, "train.lr": "0.003", "runtime.threads": "2", "runtime.n_jobs": "1"}, {})
    old = Run(
        "old",
        {**targets, "train.lr": "0.003", "train.threads": "0", "preprocess.n_jobs": "-1", "train.compile": "False"},
        {},
    )
    other = Run("other", {**targets, "train.lr": "0.01", "runtime.threads": "2"}, {})
    assert new.recipe == old.recipe != other.recipe
