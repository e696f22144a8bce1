"""What every pipeline script shares: params, user-facing errors, and the metrics files."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from eyelip import params as P
from eyelip.errors import EyelipError


def run(name: str, body: Callable[[P.Params], None]) -> None:
    """Run a stage body with params.yaml, validated whole first (a typo in any section stops every stage
    before it touches an output); an EyelipError is printed as one line, exit status 1."""
    try:
        body(P.load())
    except EyelipError as exc:
        print(f"eyelip {name}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"eyelip {name}: interrupted; no partial output was kept", file=sys.stderr)
        sys.exit(130)


def workers(runtime: P.RuntimeParams) -> dict[str, Any]:
    """joblib settings from ``runtime.n_jobs`` and ``runtime.backend``."""
    return {"n_jobs": runtime.n_jobs, "backend": runtime.backend}
