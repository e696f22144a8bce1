"""Starting real servers in tests (mlflow server, eyelip ui, mlflow models serve) and waiting for them."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ui_url(proc: subprocess.Popen, log: Path) -> str:
    """The URL `eyelip ui` prints on its stdout: first a "starting..." line at once, the URL only once the
    server answers (the lines between are the server's own log)."""
    assert proc.stdout.readline().startswith("starting the MLflow UI on ")
    for line in proc.stdout:
        if found := re.match(r"MLflow UI on \S+: (http://\S+:\d+)", line):
            return found.group(1)
    raise AssertionError(f"eyelip ui exited without a URL:\n{log.read_text()[-3000:]}")


def wait_until_answers(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if ``proc`` exits or time runs out
    (a first start migrates a new store's schema, which takes a while on busy cores)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no answer from {url} in {timeout:.0f} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
