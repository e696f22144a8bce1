"""params.yaml's schema (eyelip.params): every key of params.yaml and of both profiles is checked, by name
and by type, before any stage touches an output; editors read the same schema as JSON Schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from eyelip import stage
from eyelip.cli import main
from eyelip.errors import ParamError
from eyelip.params import core
from eyelip.params import whole as P
from eyelip.profiles import apply_profile, available

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROFILES = available(REPO / "profiles")


def typo(key: str) -> str:
    """The dotted key with one letter of its last part changed (``resize.input_scale`` -> ``resize.input_xcale``)."""
    *parent, name = key.split(".")
    i = len(name) // 2
    return ".".join([*parent, name[:i] + ("x" if name[i] != "x" else "z") + name[i + 1 :]])


def wrong(value: Any) -> Any:
    """A value of another type: a word for a number, a flag, a mapping or a list; a number for a word."""
    return 42 if isinstance(value, str) else "ten"


def edited(data: dict, key: str, rename: str | None = None, value: Any = None) -> dict:
    """A deep copy of ``data`` with ``key`` renamed (keeping its place) or given ``value``."""
    out = yaml.safe_load(yaml.safe_dump(data, sort_keys=False))
    *path, name = key.split(".")
    node = out
    for part in path:
        node = node[part]
    if rename is None:
        node[name] = value
    else:
        items = list(node.items())
        node.clear()
        node.update((rename.rsplit(".", 1)[-1] if k == name else k, v) for k, v in items)
    return out


def cases(data: dict) -> list[tuple[str, dict]]:
    """For each leaf key: (the key as the user wrote it, the broken params), a typo and a wrong type."""
    out = []
    for key in core.keys(data):
        node: Any = data
        for part in key.split("."):
            node = node[part]
        out.append((typo(key), edited(data, key, rename=typo(key))))
        out.append((key, edited(data, key, value=wrong(node))))
    return out


def stops_before_the_body(
    params_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """What ``stage.run`` prints when check-data, the first stage, which validates the whole file, refuses
    ``params_file``; fails if the body ran."""
    monkeypatch.chdir(params_file.parent)
    ran: list[P.Params] = []
    with pytest.raises(SystemExit) as stop:
        stage.run("check-data", ran.append, P.Params)
    assert stop.value.code == 1 and not ran
    return capsys.readouterr().err


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "CelebAMask-HQ"  # the layout is all that `eyelip profile` checks
    (root / "CelebA-HQ-img").mkdir(parents=True)
    (root / "CelebAMask-HQ-mask-anno").mkdir()
    return root


def test_every_key_of_params_yaml_and_the_profiles_is_checked_by_name_and_type(
    tmp_path: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    covered: dict[str, int] = {}
    # params.yaml as shipped and with each profile applied: every key, each stage's entry point.
    files = {"params.yaml": base}
    for name in PROFILES:
        shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
        apply_profile(name, dataset, tmp_path / "params.yaml", REPO / "profiles")
        files[f"params.yaml + {name}"] = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params_file = tmp_path / "params.yaml"
    for label, data in files.items():
        P.parse(data)  # valid as it is
        for key, broken in cases(data):
            params_file.write_text(yaml.safe_dump(broken, sort_keys=False))
            err = stops_before_the_body(params_file, monkeypatch, capsys)
            assert f" {key}:" in err and len(err.strip().splitlines()) == 1, f"{label}: {key}: {err}"
        covered[label] = len(core.keys(data))
    # Each profile file itself: a typo or a wrong type in it is refused when applied, naming the file and key.
    profiles_dir = tmp_path / "profiles"
    profiles_dir.mkdir()
    for name in PROFILES:
        profile = yaml.safe_load((REPO / "profiles" / f"{name}.yaml").read_text())
        for key, broken in cases(profile):
            shutil.copy2(REPO / "params.yaml", params_file)
            (profiles_dir / f"{name}.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
            with pytest.raises(ParamError) as refused:
                apply_profile(name, dataset, params_file, profiles_dir)
            assert f"{name}.yaml merged into" in str(refused.value) and f" {key}:" in str(refused.value), str(
                refused.value
            )
            assert params_file.read_text() == (REPO / "params.yaml").read_text(), "nothing written"
        covered[f"profiles/{name}.yaml"] = len(core.keys(profile))
    report = ", ".join(f"{label}: {n}" for label, n in covered.items())
    print(f"\nleaf keys covered (each with a one-letter typo and a wrong type): {report}")
    schema_keys = set(core.keys(P.Params().model_dump())) - {"train.loss.pos_weight"}  # optional, not in params.yaml
    assert set(core.keys(base)) == schema_keys, "params.yaml lists every key of the schema"


@pytest.mark.parametrize(
    "broken, message",
    [
        ({"resize": {"input_scal": 2}}, "resize.input_scal: unknown key; did you mean resize.input_scale?"),
        ({"trian": {}}, "trian: unknown key; did you mean train?"),
        ({"train": {"loss": {"smooth": True}}}, "train.loss.smooth: expected a number, got True"),
        ({"model": {"base_width": "wide"}}, "model.base_width: expected an integer, got 'wide'"),
        ({"train": {"augment": {"rotate": "ten"}}}, "train.augment.rotate: expected a number, got 'ten'"),
        ({"tracking": {"experiment": 42}}, "tracking.experiment: expected a string, got 42"),
        ({"model": {"depth": -1}}, "model.depth: expected a value >= 1, got -1"),
        ({"export": {"latency_repeat": 1}}, "export.latency_repeat: unknown key; did you mean export.latency_repeats?"),
        ({"resize": {"prio": "facemesh"}}, "resize.prio: unknown key; did you mean resize.prior?"),
        ({"data": {"targets": {"eyes": ["l_eyes"]}}}, "data.targets.eyes: expected one of 'skin', "),
        ({"runtime": {"distributed": True}}, "runtime.distributed: expected one of 'auto', False, got True"),
        ({"export": {"registered_model": "a/b"}}, "export.registered_model: expected a non-blank string without"),
        # rules across keys
        ({"resize": {"size": 100}}, "resize.size: 100 px (x resize.train_scale 1) does not halve evenly"),
        ({"resize": {"input_scale": 3, "train_scale": 2}}, "resize.train_scale: 2 must divide resize.input_scale (3)"),
        ({"split": {"train": 800, "val": 0.1}}, "split: give train, val and test all as counts"),
        ({"split": {"train": 0.9, "val": 0.1, "test": 0.1}}, "split: fractions train+val+test = 1.1 > 1"),
        ({"split": {"folds": 5, "fold": 5}}, "split.fold: expected a fold index 0..4, got 5"),
        ({"split": {"val": 0.0}, "train": {"patience": 3}}, "train.patience: early stopping needs validation faces"),
        ({"model": {"prior_gate": 8}}, "model.prior_gate: needs prior channels"),
        ({"train": {"augment": {"crop": 20}}}, "train.augment.crop: 20 px windows do not halve evenly"),
        (
            {"data": {"aux_targets": {"eyes_lips": ["skin"]}}},
            "data.aux_targets: ['eyes_lips'] are already data.targets",
        ),
        ({"train": {"loss": {"jaccard": 0.0}}}, "train.loss: all weights (jaccard, bce, dice, lovasz) are 0"),
        ({"runtime": {"n_jobs": 0}}, "runtime.n_jobs: 0 workers; use -1 for all cores or a positive count"),
        ({"train": {"device": "cpu"}}, "train.device: moved to runtime.device in params.yaml"),
    ],
)
def test_each_error_is_one_line_naming_the_key(broken: dict, message: str) -> None:
    with pytest.raises(ParamError) as refused:
        P.parse(broken)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_values_reach_the_code_as_written() -> None:
    params = P.load(REPO / "params.yaml")
    assert params.split.train == 0.8 and isinstance(
        P.parse({"split": {"train": 8, "val": 1, "test": 1}}).split.train, int
    )
    assert params.train.augment.rotate == 10.0 and params.flat()["train.augment.rotate"] == 10  # MLflow: as written
    assert "train.loss.pos_weight" not in params.flat()  # None is left out, as before the schema
    assert P.parse({}) == P.Params(), "every key has its default in the schema"


def test_a_stage_validates_the_sections_it_reads_and_leaves_the_rest_to_check_data() -> None:
    from eyelip.params.train import TrainParams

    class TrainView(core.View):
        train: TrainParams = TrainParams()

    with pytest.raises(ParamError, match=r"^params.yaml: train.lrr: unknown key; did you mean train.lr\?$"):
        core.validate(TrainView, {"train": {"lrr": 0.1}})
    # Another section's typo, an unknown section and a rule across sections are check-data's (P.Params).
    other = {"train": {"lr": 0.1}, "runtime": {"n_job": 2}, "extra": {}, "model": {"depth": 9}}
    view = core.validate(TrainView, other)
    assert view.train == TrainParams(lr=0.1) and not hasattr(view, "runtime")
    with pytest.raises(ParamError, match="runtime.n_job: unknown key"):
        P.parse(other)
    # MLflow logs the file as written, the defaults of the sections the stage validated for the keys left out.
    assert view.flat()["train.lr"] == 0.1 and view.flat()["runtime.n_job"] == 2 and "train.epochs" in view.flat()
    assert "model.base_width" not in view.flat()


def test_params_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "check", "--file", str(REPO / "params.yaml")]) == 0
    assert capsys.readouterr().out.strip() == f"{REPO / 'params.yaml'}: ok, 64 keys"
    bad = tmp_path / "params.yaml"
    bad.write_text((REPO / "params.yaml").read_text().replace("  experiment: eyelip", "  experimnt: eyelip"))
    assert main(["params", "check", "--file", str(bad)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"eyelip params: error: {bad}: tracking.experimnt: unknown key; did you mean tracking.experiment?"
    )


def test_the_committed_json_schema_is_generated_from_the_models() -> None:
    expected = P.schema_text((REPO / "params.yaml").read_text())
    assert (REPO / core.SCHEMA_FILE).read_text() == expected, (
        f"{core.SCHEMA_FILE} is stale: regenerate it with `eyelip params schema > {core.SCHEMA_FILE}`"
    )


def test_each_key_is_described_by_its_params_yaml_comment() -> None:
    """One source: the schema's descriptions are params.yaml's comments (editors show them on hover)."""
    comments = P.comments((REPO / "params.yaml").read_text())
    schema = P.json_schema((REPO / "params.yaml").read_text())

    def described(node: dict, prefix: str) -> dict[str, str]:
        out = {}
        for name, prop in node.get("properties", {}).items():
            out[f"{prefix}{name}"] = prop.get("description")
            ref = prop.get("$ref")
            if ref:
                out.update(described(schema["$defs"][ref.rsplit("/", 1)[1]], f"{prefix}{name}."))
        return out

    found = described(schema, "")
    assert {k for k, v in found.items() if v is None} == {"train.loss.pos_weight"}  # optional, under train.loss's
    assert all(found[k] == comments[k] for k in found if found[k] is not None)
    assert found["resize.input_scale"].startswith("images are stored at size x input_scale; the U-Net folds")


def test_editors_find_the_schema_and_params_and_profiles_validate_against_it() -> None:
    files = [REPO / "params.yaml", *(REPO / "profiles" / f"{name}.yaml" for name in PROFILES)]
    for path in files:
        first = path.read_text().splitlines()[0]
        target = (path.parent / first.split("$schema=", 1)[1]).resolve()
        assert first.startswith("# yaml-language-server: $schema=") and target == REPO / core.SCHEMA_FILE, path
    check = subprocess.run(
        [str(BIN / "check-jsonschema"), "--schemafile", str(REPO / core.SCHEMA_FILE), *map(str, files)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_json_schema_flags_what_editors_should(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  lr: fast\n  epoch: 3\n")
    check = subprocess.run(
        [str(BIN / "check-jsonschema"), "--schemafile", str(REPO / core.SCHEMA_FILE), str(bad)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1 and "'fast' is not of type 'number'" in check.stdout + check.stderr


def test_library_allowed_values_agree_with_the_schema() -> None:
    """Where a library module keeps its own list (for callers outside the pipeline), it is the schema's."""
    from typing import get_args

    from eyelip.data.fuse import RULES
    from eyelip.data.layout import PARTS
    from eyelip.data.parallel import BACKENDS, ON_ERROR
    from eyelip.data.prior import PRIORS
    from eyelip.model import unet
    from eyelip.params.data import OnError, Part, Rule
    from eyelip.params.model import Block, Norm
    from eyelip.params.resize import Prior
    from eyelip.params.runtime import Backend

    pairs: list[tuple[Any, tuple]] = [
        (Rule, RULES),
        (Part, PARTS),
        (Backend, BACKENDS),
        (OnError, ON_ERROR),
        (Prior, PRIORS),
        (Norm, unet._NORMS),
        (Block, unet._BLOCKS),
    ]
    for literal, values in pairs:
        assert get_args(literal) == tuple(values), (literal, values)


def test_dvc_repro_checks_every_section_whichever_key_changed(project) -> None:
    """runtime: and tracking: are no stage's params and an unknown section is nobody's: the check-data stage
    depends on the whole file, so `dvc repro` refuses each typo instead of saying "up to date"."""
    project.set_params(sample={"n": 4, "image_size": 64, "mask_size": 64})
    project.dvc("repro", "sample", "check-data")
    sample = (project.root / "data" / "sample.zip").read_bytes()
    original = project.params
    breaks = {
        "trian": lambda d: d.update(trian=d.pop("train")),
        "runtime.n_jbs": lambda d: d["runtime"].update(n_jbs=d["runtime"].pop("n_jobs")),
        "tracking.experimnt": lambda d: d["tracking"].update(experimnt=d["tracking"].pop("experiment")),
        "runtime.threads": lambda d: d["runtime"].update(threads="all"),
    }
    for key, edit in breaks.items():
        broken = yaml.safe_load(yaml.safe_dump(original))
        edit(broken)
        (project.root / "params.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
        proc = project.dvc("repro", check=False)
        assert proc.returncode != 0 and f"eyelip check-data: error: params.yaml: {key}:" in proc.stderr, (
            key,
            proc.stdout,
            proc.stderr,
        )
        assert (project.root / "data" / "sample.zip").read_bytes() == sample
        assert not (project.root / "data" / "fused").exists()
    (project.root / "params.yaml").write_text(yaml.safe_dump(original, sort_keys=False))
    assert "eyelip params" not in project.run(str(BIN / "eyelip"), "params", "check").stderr
