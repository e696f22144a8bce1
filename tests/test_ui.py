"""`eyelip ui` serves the real MLflow UI, whose run comparison shows two DVC experiments side by side.

The browser is Debian's headless Chromium (`.ci/run` installs it); without it the test skips.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import BIN, REPO
from mlflow.tracking import MlflowClient

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = REPO / "docs" / "mlflow-compare.png"
# The built-in synthetic sample, tiny: the browser test is about the UI, not the data. Enough steps
# (64 images, batch 4, 4 epochs) for the two learning rates to reach different val IoUs (~0.26, ~0.42).
TINY = {"sample": {"n": 80, "image_size": 128, "mask_size": 128}, "resize": {"size": 64},
        "model": {"base_width": 8, "depth": 3}, "train": {"epochs": 4, "batch_size": 4}, "runtime": {"threads": 2}}
EXPERIMENTS = {"lr-small": 0.003, "lr-large": 0.03}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  # Virtual time runs until the single-page app has fetched and rendered the runs.
                  "--virtual-time-budget=15000",
                  # Wide enough for the metrics grid to render every run's column (it is virtualised), tall enough
                  # for the screenshot to reach the metrics table.
                  "--window-size=1400,2050"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mlflow_format(value: float) -> str:
    """The MLflow UI's number format (``Utils.formatMetric`` in mlflow 3.17's JS bundle)."""
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa}e{int(exponent)}"  # JS toExponential(3): 1.192e-7
    scale = 1e3 if abs(value) < 10 else 1e2 if abs(value) < 100 else 1e1
    rounded = round(value * scale) / scale
    return str(int(rounded)) if rounded == int(rounded) else str(rounded)


@contextmanager
def eyelip_ui(root: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """`eyelip ui` on a free loopback port; yields the URL it printed once the server answers."""
    port = free_port()
    with log.open("w") as sink:
        # Own session: the signal at the end reaches eyelip, mlflow and its uvicorn worker alike.
        proc = subprocess.Popen([str(BIN / "eyelip"), "ui", "--port", str(port)], cwd=root, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=sink, start_new_session=True)
        try:
            line = proc.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            assert match and match.group() == f"http://127.0.0.1:{port}", line
            deadline = time.monotonic() + 180  # mlflow's first start migrates the store's schema
            while True:
                assert proc.poll() is None, f"eyelip ui exited:\n{log.read_text()[-3000:]}"
                try:
                    with urllib.request.urlopen(f"{match.group()}/health", timeout=5) as response:
                        if response.status == 200:
                            break
                except OSError:
                    assert time.monotonic() < deadline, f"no answer from the MLflow UI:\n{log.read_text()[-3000:]}"
                    time.sleep(1)
            yield match.group()
        finally:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl+C sends
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def metric_cells(dom: str, metric: str) -> list[str]:
    """Values in ``metric``'s row of the compare page's metrics table, left to right.

    The table is two virtualised grids (names, values) whose cells share a row's ``top`` offset.
    """
    name = re.search(rf'top: (\d+)px;[^"]*"><a [^>]*>{re.escape(metric)}<i', dom)
    assert name, f"no {metric} row in the compare page's metrics table"
    section = dom[name.end():dom.index(">Artifacts<", name.end())]
    cells = re.findall(rf'left: (\d+)px; position: absolute; top: {name.group(1)}px;[^"]*"><span[^>]*>([^<]*)<',
                       section)
    return [value for _, value in sorted(cells, key=lambda cell: int(cell[0]))]


@pytest.mark.slow
def test_mlflow_ui_compares_two_experiments(project, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium not found: `apt-get install chromium` (Debian) to run the browser test")
    project.set_params(**TINY)
    project.dvc("repro", "split")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline")
    for name, lr in EXPERIMENTS.items():
        project.dvc("exp", "run", "--temp", "train", "-S", f"train.lr={lr}", "-n", name)

    store = project.root / "mlflow.db"
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("eyelip")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(EXPERIMENTS)
    val_iou = {name: run.data.metrics["val_iou"] for name, run in runs.items()}
    assert len(set(map(mlflow_format, val_iou.values()))) == 2, f"runs not told apart: {val_iou}"

    env = {k: v for k, v in project.env.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    ids = [run.info.run_id for run in runs.values()]
    with eyelip_ui(project.root, env, tmp_path / "ui.log") as url:
        page = (f'{url}/#/compare-runs?runs=["{ids[0]}","{ids[1]}"]'
                f'&experiments=["{experiment.experiment_id}"]')
        shot = tmp_path / "mlflow-compare.png"
        dom = chromium(page, tmp_path / "profile", "--dump-dom", f"--screenshot={shot}").stdout  # one page load

    assert "Comparing 2 Runs" in dom, dom[-2000:]
    for name in EXPERIMENTS:
        assert name in dom
    # Columns follow the URL's run order.
    assert metric_cells(dom, "val_iou") == [mlflow_format(run.data.metrics["val_iou"]) for run in runs.values()]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    # The README's picture: refreshed on request, so routine runs leave the work tree clean.
    if os.environ.get("EYELIP_UPDATE_DOCS") == "1" or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy2(shot, SCREENSHOT)
    print(f"screenshot: {shot}")
