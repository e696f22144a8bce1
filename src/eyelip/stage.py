"""What every pipeline script shares: params, user-facing errors, and the metrics files."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from eyelip import params as P
from eyelip.data.parallel import BACKENDS
from eyelip.errors import EyelipError, ParamError


def run(name: str, body: Callable[[dict[str, Any]], None]) -> None:
    """Run a stage body with params.yaml; an EyelipError is printed as one line, exit status 1."""
    try:
        body(P.load())
    except EyelipError as exc:
        print(f"eyelip {name}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"eyelip {name}: interrupted; no partial output was kept", file=sys.stderr)
        sys.exit(130)


def workers(params: dict[str, Any]) -> dict[str, Any]:
    """joblib settings from ``runtime.n_jobs`` and ``runtime.backend``."""
    n_jobs = P.integer(params, "runtime.n_jobs", default=-1)
    if n_jobs == 0:
        raise ParamError("runtime.n_jobs: 0 workers; use -1 for all cores or a positive count")
    return {"n_jobs": n_jobs, "backend": P.choice(params, "runtime.backend", BACKENDS, default="loky")}
