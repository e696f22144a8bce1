"""`eyelip ui` serves the real MLflow UI: it lists this project's runs by name with their params and
val_iou, and its compare view opens for two DVC experiments.

The checks read the text a user sees, not MLflow's markup, so a new MLflow front end does not break them.
The browser is Debian's headless Chromium (`.ci/run` installs it); without it the test skips. The
screenshot of the compare view goes to the test's temporary folder, or to $EYELIP_UI_SCREENSHOT when set
(e.g. ``EYELIP_UI_SCREENSHOT=docs/mlflow-compare.png`` to refresh the README's picture).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import BIN
from mlflow.tracking import MlflowClient
from servers import free_port, ui_url

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The built-in synthetic sample, tiny: the browser test is about the UI, not the data.
TINY = {
    "sample": {"n": 80, "image_size": 128, "mask_size": 128},
    "resize": {"size": 64},
    "model": {"base_width": 8, "depth": 3},
    "train": {"epochs": 4, "batch_size": 4},
    "runtime": {"threads": 2},
}
EXPERIMENTS = {"lr-small": 0.003, "lr-large": 0.03}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Virtual time runs until the single-page app has fetched and rendered the runs.
    "--virtual-time-budget=15000",
    # Large enough for the (virtualised) tables to render every run and the params we look for.
    "--window-size=1400,2050",
]


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
        proc = subprocess.Popen(
            [str(BIN / "eyelip"), "ui", "--port", str(port)],
            cwd=root,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=sink,
            start_new_session=True,
        )
        try:
            url = ui_url(proc, log)  # printed once the server answers
            assert url == f"http://127.0.0.1:{port}"
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl+C sends
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def page_text(dom: str) -> str:
    """What a reader of the page sees: the DOM's text without scripts, styles and markup."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def test_mlflow_ui_lists_and_compares_two_experiments(project, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium not found: `apt-get install chromium` (Debian) to run the browser test")
    project.set_params(**TINY)
    project.dvc("repro", "split")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline")
    for name, lr in EXPERIMENTS.items():
        project.dvc("exp", "run", "--temp", "train", "-S", f"train.lr={lr}", "-n", name)

    client = MlflowClient(f"sqlite:///{project.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("eyelip")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(EXPERIMENTS)
    shot = Path(os.environ.get("EYELIP_UI_SCREENSHOT") or tmp_path / "mlflow-compare.png").resolve()
    shot.parent.mkdir(parents=True, exist_ok=True)

    env = {k: v for k, v in project.env.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    with eyelip_ui(project.root, env, tmp_path / "ui.log") as url:
        # The runs list, searched by a metric: the runs that logged val_iou.
        search = urllib.parse.quote("metrics.val_iou >= 0")
        listing = page_text(
            chromium(
                f"{url}/#/experiments/{experiment.experiment_id}/runs?searchFilter={search}",
                tmp_path / "p1",
                "--dump-dom",
            ).stdout
        )
        ids = ",".join(f'"{run.info.run_id}"' for run in runs.values())
        compare = page_text(
            chromium(
                f'{url}/#/compare-runs?runs=[{ids}]&experiments=["{experiment.experiment_id}"]',
                tmp_path / "p2",
                "--dump-dom",
                f"--screenshot={shot}",
            ).stdout
        )
    (tmp_path / "listing.txt").write_text(listing)  # for a failure's post-mortem
    (tmp_path / "compare.txt").write_text(compare)

    for name in EXPERIMENTS:
        assert name in listing, f"run {name} not listed: {listing[-2000:]}"
    # The compare view shows the two runs with their learning rates and val_iou values.
    assert "val_iou" in compare and "train.lr" in compare, compare[-2000:]
    for name, run in runs.items():
        assert name in compare, compare[-2000:]
        assert run.data.params["train.lr"] in compare, compare[-2000:]
        assert mlflow_format(run.data.metrics["val_iou"]) in compare, (run.data.metrics["val_iou"], compare[-2000:])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")
