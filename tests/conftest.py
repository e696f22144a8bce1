"""Shared fixtures. Two kinds of face data:

- ``synthetic`` (session): faces the suite makes itself with the project's own generator
  (``eyelip.data.synthetic.generate_sample``), unpacked into CelebAMask-HQ's folder layout. Every
  test of mechanics (fusing, resizing, zip reading, predict, evaluate, export parity, training,
  resume, bad input) uses it, so a public clone without ``../shared`` runs them all.
- ``mini`` / ``mini_few`` (session): the 504 real CelebAMask-HQ faces in ``../shared`` (or
  ``$EYELIP_MINI``), read in place. Only for what needs real faces (quality ceilings, a face the
  face mesh can find). A test that asks for them is marked ``real_data`` automatically, and it is
  the only kind that skips without the set (``EYELIP_MINI=/nonexistent`` shows what a clone runs).

A test that uses ``project`` (a temporary git + DVC copy of the project, driven through the real
``dvc`` CLI) is marked ``slow`` automatically: ``pytest -m "not slow"`` runs no DVC pipeline.
"""

from __future__ import annotations

import os

# Two pytest workers share the cores (pyproject's -n 2): OpenMP threads that wait should sleep, not
# spin, or each worker's torch steals the other's CPU. Set before torch loads; stage processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from eyelip.data.arrays import ids_text
from eyelip.data.dataset import ResizedArrays
from eyelip.data.layout import PARTS, image_relpath, mask_relpath
from eyelip.data.source import Source
from eyelip.data.spec import DataSpec
from eyelip.data.synthetic import generate_sample

# A shell without job control (`./dev test &` in a script, some CI runners) starts the suite with SIGINT
# ignored, which every process it starts inherits: the Ctrl+C tests would see training run on. A handler
# here is reset to the default in each child, whose Python then raises KeyboardInterrupt as at a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
MINI = Path(os.environ.get("EYELIP_MINI", REPO.parent / "shared" / "celebamask-hq-mini")).resolve()
BIN = Path(sys.executable).parent  # the venv's bin: dvc, and the `python` that stage commands call
# What a clone of the project holds that the pipeline needs (data and stores are never copied).
PROJECT_FILES = ("dvc.yaml", "params.yaml", "pipeline", "src", "pyproject.toml")


# The synthetic faces: ids 0..43 with 256 px photos, then 2000..2003 with 512 px photos in the second
# mask folder (``id // 2000``), so both folders and two photo sizes are read; every part mask is 512 px,
# CelebAMask-HQ's mask size. Ids 3 and 2001 are a small and a large photo, as in the mini set.
SYNTHETIC_IDS = (*range(44), *range(2000, 2004))
SYNTHETIC_PHOTO = {3: 256, 2001: 512}
SYNTHETIC_MASK = 512


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tiers follow from the fixtures a test uses, so a new test cannot land in the wrong one.

    Then the modules with a slow test go first, each kept whole (a module-scoped fixture is made once per
    worker): the scheduler below hands tests out one by one as the two workers free up, so the minute-long
    tests start early and the many short ones even out the end (a long test handed out last runs alone)."""
    for item in items:
        if "mini" in item.fixturenames:
            item.add_marker(pytest.mark.real_data)
        if "project" in item.fixturenames:
            item.add_marker(pytest.mark.slow)
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)  # stable: each module's order is kept


# Modules whose tests share a costly fixture, each run whole by one worker so that it is made once, not
# once per worker: the workflow's origin (a whole pipeline run) and the team stack (PostgreSQL, S3 and an
# MLflow server).
ONE_WORKER = ("test_workflow.py", "test_team.py")


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """pyproject's ``-n 2`` (xdist's ``--dist load``), with ONE_WORKER's modules as single units of work
    (xdist's ``xdist_group`` mark does that no more under pytest 9: pytest-xdist issue 1386). The units
    with the most tests go first, then the rest in collection order, one test at a time."""
    if config.getvalue("dist") != "load":
        return None  # an explicit --dist keeps its meaning
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            return module if Path(module).name in ONE_WORKER else nodeid

    return Scheduler(config, log)


@pytest.fixture(autouse=True)
def _tracking_uri_stays_in_its_test() -> Iterator[None]:
    """``mlflow.set_tracking_uri`` (which eyelip's store calls in-process) also sets MLFLOW_TRACKING_URI in
    os.environ, which every later subprocess of this worker inherits: without this, one test's store
    becomes the store of the next test's `dvc` or stage process, depending on test order."""
    from mlflow.tracking._tracking_service import utils

    env, uri = os.environ.get("MLFLOW_TRACKING_URI"), utils._tracking_uri
    yield
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = env
    utils._tracking_uri = uri


@pytest.fixture(scope="session")
def mini() -> Path:
    """The 504 real CelebAMask-HQ samples; never copied into the repository."""
    if not (MINI / "CelebA-HQ-img").is_dir():
        pytest.skip(
            f"real_data: needs real faces (licensed, not in a public clone); the mini set is not at "
            f"{MINI} (set EYELIP_MINI)"
        )
    return MINI


@pytest.fixture(scope="session")
def mini_few(mini: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 of the real faces, for pipeline runs whose point is not the amount of data: every stage
    still does its real work, at a fifth of the full set's cost. The last few ids sit in the second
    mask folder (``id // 2000``), so both folders are read."""
    ids = sorted(int(p.stem) for p in (mini / "CelebA-HQ-img").glob("*.jpg"))
    return copy_samples(mini, tmp_path_factory.mktemp("mini-few"), ids[:96] + ids[-4:])


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 synthetic faces in CelebAMask-HQ's folder layout (see SYNTHETIC_IDS), made once per pytest
    worker (about 2 s): a test may read them in place but must copy what it changes."""
    root = tmp_path_factory.mktemp("synthetic")
    faces = root / "CelebAMask-HQ"
    small, large = SYNTHETIC_PHOTO[3], SYNTHETIC_PHOTO[2001]
    for seed, first, n, size in ((0, 0, 44, small), (1, 2000, 4, large)):
        archive = root / f"seed{seed}.zip"
        generate_sample(archive, n, seed, image_size=size, mask_size=SYNTHETIC_MASK)
        source = Source(archive)
        for i in source.ids():
            pairs = [
                (image_relpath(i), image_relpath(first + i)),
                *((mask_relpath(i, part), mask_relpath(first + i, part)) for part in PARTS),
            ]
            for name, renamed in pairs:
                if source.exists(name):
                    (faces / renamed).parent.mkdir(parents=True, exist_ok=True)
                    (faces / renamed).write_bytes(source.read(name))
        archive.unlink()
    return faces


@pytest.fixture
def tiny_arrays(tmp_path: Path) -> ResizedArrays:
    """16 random 32 px faces with sparse masks: enough to run the training loop, not to learn anything."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    np.save(tmp_path / "masks.npy", (rng.random((16, 1, 32, 32)) < 0.05).astype(np.uint8))
    (tmp_path / "ids.txt").write_text(ids_text(list(range(16))))
    DataSpec({"eyes_lips": ["l_eye", "r_eye", "u_lip", "l_lip"]}, 32).write(tmp_path)
    return ResizedArrays(tmp_path)


def copy_samples(root: Path, dest: Path, ids: list[int]) -> Path:
    """A folder with some samples of a dataset folder (a temporary working copy, deleted with tmp_path)."""
    for sample_id in ids:
        for src in [
            root / "CelebA-HQ-img" / f"{sample_id}.jpg",
            *(root / "CelebAMask-HQ-mask-anno" / str(sample_id // 2000)).glob(f"{sample_id:05d}_*.png"),
        ]:
            target = dest / src.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


mini_subset = copy_samples  # the name tests written before the synthetic fixture import


class Project:
    """A temporary copy of the project as a git + DVC repository, driven through the real CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(args, cwd=self.root, env=self.env, text=True, capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def dvc(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return self.run(str(BIN / "dvc"), *args, check=check, timeout=timeout)

    @property
    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def set_params(self, **sections: dict) -> None:
        """Update params.yaml section by section, e.g. ``set_params(resize={"size": 64})``."""
        params = self.params
        for name, values in sections.items():
            params.setdefault(name, {}).update(values)
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_project(root: Path) -> None:
    """The pipeline's files into an empty folder ``root`` (benchmarks/scale.py uses it too)."""
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, root / name)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "eyelip"
    copy_project(root)
    proj = Project(root)
    proj.run("git", "init", "-q")
    proj.run("git", "config", "user.email", "test@example.com")
    proj.run("git", "config", "user.name", "test")
    proj.dvc("init", "-q")
    shutil.copy2(REPO / ".dvc" / "config", root / ".dvc" / "config")
    # A real commit, as in a clone: runs record its SHA (an uncommitted repository records "unknown").
    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-qm", "project files")
    return proj
