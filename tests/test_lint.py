"""The CI workflow and the shell entry points pass their linters: actionlint (which runs shellcheck
on each `run:` script) and shellcheck. `./dev lint` runs ruff over the Python code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

BIN = Path(sys.executable).parent

needs_shellcheck = pytest.mark.skipif(
    shutil.which("shellcheck") is None,
    reason="shellcheck not installed (Debian package shellcheck; .ci/run installs it)",
)


@needs_shellcheck
def test_actionlint_finds_nothing_in_the_workflows() -> None:
    workflows = sorted(str(p) for p in (REPO / ".github" / "workflows").glob("*.yml"))
    proc = subprocess.run([str(BIN / "actionlint"), *workflows], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_shellcheck
def test_shellcheck_finds_no_warning_in_the_entry_points() -> None:
    proc = subprocess.run(
        ["shellcheck", "--severity=warning", "dev", ".ci/run"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_reports_a_node20_action(tmp_path: Path) -> None:
    # The check can fail: an action major that runs on Node 20 is flagged.
    workflow = tmp_path / "old.yml"
    workflow.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n"
    )
    proc = subprocess.run([str(BIN / "actionlint"), "-shellcheck=", str(workflow)], capture_output=True, text=True)
    assert proc.returncode == 1 and "actions/checkout@v4" in proc.stdout and "node20" in proc.stdout.lower()
