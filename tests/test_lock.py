"""requirements.lock: every range of pyproject.toml pinned with hashes, and the venv exactly the lock."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = REPO / "requirements.lock"
EXTRAS = ("dev", "prior", "server")  # what ./dev lock resolves


def pins() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from the lock's `name==version \\ --hash=...` entries."""
    entries = re.findall(
        r"^([A-Za-z0-9_.\-]+)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", LOCK.read_text(), re.M
    )
    return {
        canonicalize_name(name): (version, re.findall(r"[0-9a-f]{64}", hashes)) for name, version, hashes in entries
    }


def test_every_pyproject_requirement_is_pinned_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for extra in EXTRAS for r in project["optional-dependencies"][extra])]
    locked = pins()
    for line in wanted:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name}: in pyproject.toml but not in requirements.lock; run `./dev lock`"
        assert req.specifier.contains(locked[name][0], prereleases=True), (
            f"{req.name}=={locked[name][0]} in requirements.lock is outside pyproject.toml's {req}; run `./dev lock`"
        )
    assert locked["torch"][0].endswith("+cpu")  # the CPU build: no CUDA libraries in the lock


def test_every_pin_has_a_hash() -> None:
    locked = pins()
    assert len(locked) > 150
    assert [name for name, (_, hashes) in locked.items() if not hashes] == []


def test_the_venv_is_exactly_the_lock() -> None:
    stamp = Path(sys.prefix) / ".installed"
    if not stamp.is_file() or "requirements.lock" not in stamp.read_text():
        pytest.skip("this environment was not set up by ./dev from requirements.lock")
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed.pop("eyelip")
    installed.pop("pip", None)  # the venv's own installer, which uv pip sync keeps
    assert installed == {name: version for name, (version, _) in pins().items()}
