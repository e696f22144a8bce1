"""`eyelip profile`: profiles merge into params.yaml keeping comments and order; errors are clear."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
import yaml

from eyelip.cli import main
from eyelip.errors import DataError, EyelipError
from eyelip.params.core import flatten
from eyelip.profiles import apply_profile, available

REPO = Path(__file__).resolve().parents[1]


def keys(text: str) -> dict:
    """params as flat keys, ``data.targets`` as one: a profile replaces the whole layout."""
    out: dict = {}
    for key, value in flatten(yaml.safe_load(text)).items():
        if key.startswith("data.targets."):
            out.setdefault("data.targets", {})[key.removeprefix("data.targets.")] = value
        else:
            out[key] = value
    return out


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project's params.yaml and profiles/ in a temporary project root, as the cwd."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO / "profiles", root / "profiles")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """An empty CelebAMask-HQ-shaped folder outside the project (the layout is all that is checked)."""
    root = tmp_path / "CelebAMask-HQ"
    (root / "CelebA-HQ-img").mkdir(parents=True)
    (root / "CelebAMask-HQ-mask-anno").mkdir()
    return root


def test_profiles_set_the_same_known_keys() -> None:
    """Switching profiles leaves nothing of the previous one behind; a typo'd key is caught."""
    defaults = keys((REPO / "params.yaml").read_text())
    sets = {name: set(keys((REPO / "profiles" / f"{name}.yaml").read_text())) for name in available(REPO / "profiles")}
    assert {"mini", "celebamask-hq"} <= set(sets)
    assert len({frozenset(k) for k in sets.values()}) == 1, sets
    assert set.union(*sets.values()) <= set(defaults)


def test_merge_keeps_comments_and_order_and_changes_only_the_profile_keys(workspace: Path, dataset: Path) -> None:
    before = (workspace / "params.yaml").read_text()
    changed = apply_profile("mini", dataset)
    after = (workspace / "params.yaml").read_text()
    profile = keys((workspace / "profiles" / "mini.yaml").read_text())
    expected = {**keys(before), **profile, "data.root": str(dataset.resolve())}
    assert keys(after) == expected
    assert list(keys(after)) == list(keys(before)), "key order"
    comments = [line.split("#", 1)[1] for line in before.splitlines() if "#" in line]
    assert all(c in after for c in comments)
    # As `git diff` sees it: one changed line per changed key, nothing else.
    diff = [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line.startswith("-") and not line.startswith("---")
    ]
    assert len(diff) == len(changed) and any(line.startswith("data.root: ") for line in changed)
    assert apply_profile("mini", dataset) == [], "applying twice changes nothing"


def test_switching_profiles_and_replacing_targets(workspace: Path, dataset: Path) -> None:
    apply_profile("mini", dataset)
    apply_profile("celebamask-hq", dataset)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    assert params["split"] == {"seed": 0, "train": 8100, "val": 900, "test": 1000, "folds": 0, "fold": 0}
    assert params["model"]["base_width"] == 64 and params["train"]["epochs"] == 80
    (workspace / "profiles" / "parts.yaml").write_text(
        "data:\n  targets: {eyes: [l_eye, r_eye], lips: [u_lip, l_lip]}\n  aux_targets: {skin: [skin]}\n"
    )
    apply_profile("parts", dataset)
    data = yaml.safe_load((workspace / "params.yaml").read_text())["data"]
    assert data["targets"] == {"eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}, "replaced, not merged"
    assert data["aux_targets"] == {"skin": ["skin"]}
    apply_profile("celebamask-hq", dataset)
    assert yaml.safe_load((workspace / "params.yaml").read_text())["data"]["aux_targets"] == {}, "replaced by {}"


def test_data_root_inside_the_project_stays_relative(workspace: Path, dataset: Path) -> None:
    shutil.copytree(dataset, workspace / "data" / "faces")
    apply_profile("mini", "data/faces")
    assert yaml.safe_load((workspace / "params.yaml").read_text())["data"]["root"] == "data/faces"


def test_errors_name_the_profiles_and_the_missing_root(
    workspace: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (workspace / "params.yaml").read_text()
    with pytest.raises(EyelipError, match="unknown profile 'tiny'; available: celebamask-hq, mini"):
        apply_profile("tiny", dataset)
    with pytest.raises(DataError, match="nowhere does not exist"):
        apply_profile("mini", workspace / "nowhere")
    assert (workspace / "params.yaml").read_text() == before, "nothing written on error"
    assert main(["profile", "tiny", "--data-root", str(dataset)]) == 1
    assert "eyelip profile: error: unknown profile 'tiny'" in capsys.readouterr().err
    assert main(["profile", "mini", "--data-root", str(dataset)]) == 0
    assert "review with `git diff params.yaml`" in capsys.readouterr().out
