"""`dvc repro` re-runs a stage when any code it runs changes: each stage's deps in dvc.yaml are
exactly the project files its script imports (read from the source, lazy imports included), and
the package layout keeps serving apart from training with no import circle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from imports import ROOT, SRC, closure, imported_modules, is_docstring_only, module_file

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def code_files(paths) -> set[Path]:
    """Without the packages' __init__ files, which hold only a docstring (checked below)."""
    return {p for p in paths if not (p.name == "__init__.py" and is_docstring_only(p))}


def stage_imports(stage: str) -> dict[Path, str]:
    script = ROOT / STAGES[stage]["cmd"].split()[1]
    return {p: chain for p, chain in closure(script).items() if p in code_files([p])}


def covered_by(dep: str) -> set[Path]:
    path = ROOT / dep
    return code_files(path.rglob("*.py")) if path.is_dir() else {path}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_exactly_the_code_it_imports(stage: str) -> None:
    deps = [d for d in STAGES[stage]["deps"] if d.startswith(("src/", "pipeline/"))]
    script = STAGES[stage]["cmd"].split()[1]
    assert script in deps, f"stage {stage}: its script {script} is not in its deps"
    used = stage_imports(stage)
    declared = set().union(*(covered_by(d) for d in deps))
    missing = [
        f"{p.relative_to(ROOT)} (imported via {chain})" for p, chain in sorted(used.items()) if p not in declared
    ]
    assert not missing, f"stage {stage}: add to its deps in dvc.yaml: " + "; ".join(missing)
    # A dep on code the stage never runs would re-run it for nothing; a folder only when all of it is used.
    unused = [d for d in deps if d != script and not covered_by(d) <= set(used)]
    assert not unused, f"stage {stage}: deps on code it does not import (list the files it uses instead): {unused}"


def test_package_inits_hold_only_a_docstring() -> None:
    # The deps above leave them out, which is right only while they run no code.
    inits = sorted(SRC.rglob("__init__.py"))
    assert len(inits) >= 6
    assert all(is_docstring_only(p) for p in inits), [str(p) for p in inits if not is_docstring_only(p)]


def module_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(SRC.rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        # Parent packages hold no code, so only modules count as edges.
        graph[name] = {m for m in imported_modules(path) if module_file(m).name != "__init__.py" and m != name}
    return graph


def test_modules_import_each_other_without_a_circle() -> None:
    graph, state, stack = module_graph(), {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert "eyelip.model.checkpoint" in graph and graph["eyelip.training.loop"]  # the graph was read


def test_using_a_model_never_imports_training() -> None:
    # Evaluating, running and shipping a trained model must work without the training code.
    for path in sorted(
        p for pkg in ("evaluation", "inference", "release") for p in (SRC / "eyelip" / pkg).glob("*.py")
    ):
        reached = closure(path)
        training = [chain for p, chain in reached.items() if "training" in p.relative_to(SRC).parts]
        assert not training, f"{path.relative_to(ROOT)} imports training code: {training}"


def stages_with_changed_code_or_params(repo: Path) -> set[str]:
    """Stages whose code deps or params differ from dvc.lock, as `dvc status` reports them."""
    out = subprocess.run(["dvc", "status", "--json"], cwd=repo, capture_output=True, text=True, check=True).stdout
    changed = set()
    for name, changes in json.loads(out or "{}").items():
        for change in changes:
            deps = change.get("changed deps", {}) if isinstance(change, dict) else {}
            if any(dep.startswith(("src/", "pipeline/", "params.yaml")) for dep in deps):
                changed.add(name)
    return changed


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's files (no data, no cache) in a fresh git repository, its dvc.lock brought up to date
    with the code and params (DVC hashes them itself), so that `dvc status` starts from "nothing changed"."""
    repo = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    script = (
        "from dvc.repo import Repo\nrepo = Repo('.')\nwith repo.lock:\n    for stage in repo.index.stages:\n"
        "        stage.save_deps(allow_missing=True)\n        stage.dump(update_pipeline=False)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=repo, check=True, capture_output=True)
    assert stages_with_changed_code_or_params(repo) == set()
    return repo


@pytest.mark.parametrize(
    "module, stages",
    [
        ("src/eyelip/model/unet.py", {"train", "evaluate", "export"}),
        ("src/eyelip/data/preprocess.py", {"fuse-masks", "resize", "train", "evaluate", "export"}),
        ("src/eyelip/data/split.py", {"split"}),
        # A section's schema: the stages that read that section, and check-data, which validates the whole file.
        ("src/eyelip/params/train.py", {"check-data", "train"}),
        ("src/eyelip/params/resize.py", {"check-data", "resize"}),
    ],
)
def test_editing_a_module_changes_exactly_the_stages_that_import_it(
    repo_copy: Path, module: str, stages: set[str]
) -> None:
    assert {s for s in STAGES if ROOT / module in stage_imports(s)} == stages  # what the source says
    original = (repo_copy / module).read_text()
    try:
        (repo_copy / module).write_text(original + "\n# an edit\n")
        assert stages_with_changed_code_or_params(repo_copy) == stages  # what DVC says
    finally:
        (repo_copy / module).write_text(original)


def test_runtime_and_tracking_params_change_no_stage(repo_copy: Path) -> None:
    params = repo_copy / "params.yaml"
    original = params.read_text()
    try:
        data = yaml.safe_load(original)
        data["runtime"].update(threads=1, n_jobs=1, device="cpu", compile=True)
        data["tracking"]["experiment"] = "renamed"
        params.write_text(yaml.safe_dump(data))
        # check-data validates the whole file (seconds); its output holds only data.root, so nothing after it re-runs
        assert stages_with_changed_code_or_params(repo_copy) == {"check-data"}
        data["train"]["lr"] = 0.1234  # a result-changing param does change the training
        params.write_text(yaml.safe_dump(data))
        assert stages_with_changed_code_or_params(repo_copy) == {"check-data", "train"}
    finally:
        params.write_text(original)


def test_bytecode_beside_the_sources_changes_no_stage(repo_copy: Path) -> None:
    """`./dev test` leaves __pycache__ in src/: .dvcignore keeps it out of the stages' directory deps, so
    a checkout that ran the tests hashes them as a fresh clone does (and its dvc.lock matches one)."""
    cache, stray = repo_copy / "src/eyelip/model/__pycache__", repo_copy / "src/eyelip/training/stray.pyc"
    cache.mkdir()
    try:
        (cache / "unet.cpython-311.pyc").write_bytes(b"bytecode")
        stray.write_bytes(b"bytecode")
        assert stages_with_changed_code_or_params(repo_copy) == set()
    finally:
        shutil.rmtree(cache)
        stray.unlink()
