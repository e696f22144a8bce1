"""A failed or interrupted stage leaves the workspace as it found it, through the real `dvc` CLI: DVC deletes
a stage's outputs before running it, so the git-tracked metrics and plots and the exported models are
`persist: true` in dvc.yaml (each replaced atomically when its stage succeeds). Ctrl+C in training, under
`dvc repro` and under `dvc exp run`, leaves no deleted file in `git status`, the committed metrics as they
were, and an exported model to predict with while it trains."""

from __future__ import annotations

import os
import signal
import subprocess

from conftest import BIN

TINY = {
    "sample": {"n": 16, "image_size": 64, "mask_size": 64},
    "resize": {"size": 32},
    "split": {"train": 0.5, "val": 0.25, "test": 0.25},
    "model": {"base_width": 4, "depth": 2},
    "train": {"epochs": 1, "batch_size": 8},
    "runtime": {"threads": 1, "n_jobs": 1},
    "export": {"latency_repeats": 1},
}


def tracked(project) -> dict[str, bytes]:
    names = project.run("git", "ls-files", "metrics", "models").stdout.split()
    return {name: (project.root / name).read_bytes() for name in names}


def interrupt_training(project, *command: str) -> str:
    """Run a dvc command like a user at a terminal and press Ctrl+C (SIGINT to the whole process group) once
    training has logged its first epoch; returns the output. Checks the exported model is there meanwhile."""
    env = {**project.env, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [str(BIN / "dvc"), *command],
        cwd=project.root,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("epoch 1/"):
                assert (project.root / "models" / "model.onnx").stat().st_size > 0, "no model to predict with"
                os.killpg(proc.pid, signal.SIGINT)
                break
        output = "".join(seen) + proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert any(line.startswith("epoch 1/") for line in seen), output
    assert proc.returncode != 0, output
    return output


def test_ctrl_c_in_training_deletes_nothing_git_tracks(project) -> None:
    (project.root / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    project.set_params(**TINY)
    project.dvc("repro")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "a finished run")
    before = tracked(project)
    assert "metrics/train.json" in before and "metrics/split.json" in before
    project.set_params(train={"epochs": 400})
    for command in (("repro",), ("exp", "run")):
        output = interrupt_training(project, *command)
        status = project.run("git", "status", "--porcelain").stdout.splitlines()
        assert not [line for line in status if line[:2].strip() == "D"], f"{command}: {status}\n{output}"
        assert tracked(project) == before, command  # the last finished run's metrics, as committed
        assert (project.root / "models" / "model.onnx").stat().st_size > 0
