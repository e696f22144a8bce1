"""Starting real servers in tests (mlflow server, eyelip ui, mlflow models serve, the team stack of PostgreSQL,
S3 and mlflow server) and waiting for them."""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent  # the venv's bin: mlflow, moto_server


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


def wait_until_answers(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if ``proc`` exits or time runs out
    (a first start migrates a new store's schema, which takes minutes on busy cores)."""
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


# The team stack (docs/scaling.md): PostgreSQL, an S3 endpoint (moto) and `mlflow server` on both.
# Plain functions, so benchmarks/team_store.py starts the same stack as tests/test_team.py.

S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "eyelip-test",
    "AWS_SECRET_ACCESS_KEY": "eyelip-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKETS = ("mlflow", "dvc")  # the server's artifacts and the DVC remote


def postgres_bin() -> Path | None:
    """The folder of ``initdb``/``postgres``: on PATH, or Debian's /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def team_stack_missing() -> str | None:
    """Why the team stack cannot start here (None when it can): `.ci/run` installs what it needs."""
    for module, package in (
        ("psycopg", "psycopg[binary]"),
        ("boto3", "boto3"),
        ("moto", "moto[server]"),
        ("dvc_s3", "dvc-s3"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed: pip install -e '.[server]'"
    if postgres_bin() is None:
        return "no PostgreSQL server (initdb): apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run PostgreSQL as"
    return None


def start_logged(cmd: list[str], log: Path, **popen: Any) -> subprocess.Popen:
    """``cmd`` in its own session (so :func:`stop` ends it and every process it forks, nothing else)."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal ``proc``'s process group, wait a bounded time, then kill whatever is left of the group."""
    with suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=timeout)


@dataclass(frozen=True)
class TeamStack:
    tracking_uri: str  # http://127.0.0.1:PORT, the mlflow server
    s3_endpoint: str  # http://127.0.0.1:PORT, moto's S3
    database_uri: str  # postgresql://eyelip@127.0.0.1:PORT/mlflow, the server's backend store

    @property
    def client_env(self) -> dict[str, str]:
        """What a teammate sets: the tracking server, and S3 credentials for DVC's remote (MLflow's
        artifacts go through the server)."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, **S3_KEYS}


@contextmanager
def team_stack(root: Path, workers: int = 1) -> Iterator[TeamStack]:
    """Start PostgreSQL, moto's S3 and ``mlflow server`` (PostgreSQL backend store, artifacts proxied to
    s3://mlflow) on free loopback ports under ``root``; stop all three on exit, even on failure. One
    server worker serves concurrent requests on threads; with several, uvicorn restarts a worker that
    misses its health check on busy cores, dropping the requests in flight."""
    import boto3
    import psycopg

    bin_dir = postgres_bin()
    assert bin_dir is not None, team_stack_missing()
    with ExitStack() as cleanup:
        # PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` user, in a folder it owns
        # (pytest's tmp folders are private to root).
        as_user: dict[str, Any] = {}
        data = Path(tempfile.mkdtemp(prefix="eyelip-pg-"))
        cleanup.callback(shutil.rmtree, data, ignore_errors=True)
        if os.geteuid() == 0:
            as_user = {"user": "postgres", "group": "postgres"}
            shutil.chown(data, "postgres", "postgres")
        log = root / "postgres.log"
        with open(log, "ab") as out:
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data / "db"),
                    "-U",
                    "eyelip",
                    "--auth=trust",
                    "--no-locale",
                    "-E",
                    "UTF8",
                ],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                **as_user,
            )
        pg_port = free_port()
        pg = start_logged(
            [str(bin_dir / "postgres"), "-D", str(data / "db"), "-p", str(pg_port), "-h", "127.0.0.1", "-k", str(data)],
            log,
            **as_user,
        )
        cleanup.callback(stop, pg, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        deadline = time.monotonic() + 60
        while True:
            assert pg.poll() is None, f"PostgreSQL exited:\n{log.read_text()[-3000:]}"
            try:
                conn = psycopg.connect(
                    host="127.0.0.1", port=pg_port, user="eyelip", dbname="postgres", connect_timeout=5, autocommit=True
                )  # CREATE DATABASE: no transaction
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, f"PostgreSQL not ready in 60 s:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        with conn:
            conn.execute("CREATE DATABASE mlflow")

        s3_port = free_port()
        s3 = start_logged([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], root / "s3.log")
        cleanup.callback(stop, s3)
        s3_endpoint = f"http://127.0.0.1:{s3_port}"
        wait_until_answers(f"{s3_endpoint}/moto-api/", s3, root / "s3.log")
        client = boto3.client(
            "s3", endpoint_url=s3_endpoint, **{k.lower(): v for k, v in S3_KEYS.items() if k != "AWS_DEFAULT_REGION"}
        )
        for bucket in BUCKETS:
            client.create_bucket(Bucket=bucket)

        stack = TeamStack(
            f"http://127.0.0.1:{free_port()}", s3_endpoint, f"postgresql://eyelip@127.0.0.1:{pg_port}/mlflow"
        )
        # Without the job runner and its six task consumers (GenAI jobs, unused by eyelip): seven processes fewer.
        env = {
            **os.environ,
            **S3_KEYS,
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        port = stack.tracking_uri.rsplit(":", 1)[1]
        server = start_logged(
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--backend-store-uri",
                stack.database_uri,
                "--artifacts-destination",
                f"s3://{BUCKETS[0]}/artifacts",
                "--serve-artifacts",
                "--workers",
                str(workers),
            ],
            root / "mlflow.log",
            env=env,
        )
        cleanup.callback(stop, server)
        # The first start creates and migrates the schema in PostgreSQL: longer than SQLite's on busy cores.
        wait_until_answers(f"{stack.tracking_uri}/health", server, root / "mlflow.log", timeout=180)
        yield stack
