"""What every pipeline script shares: params, user-facing errors, and the metrics files."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from eyelip.errors import EyelipError
from eyelip.params import core


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a queue worker stopped), raised like Ctrl+C's KeyboardInterrupt so that the
    same clean-up runs: no partial output kept, the MLflow run ended KILLED."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def close_tracking(error: BaseException) -> None:
    """End a stage's MLflow run still open as KILLED or FAILED (``eyelip.tracking.store.close_run``),
    not FINISHED as MLflow's exit hook would. Looked up, not imported: only stages that track load the
    tracking code, and an import here would make every stage depend on it (dvc.yaml deps)."""
    store = sys.modules.get("eyelip.tracking.store")
    if store is not None:
        store.close_run(error)


F = TypeVar("F", bound=core.File)


def run(name: str, body: Callable[[F], None], params: type[F]) -> None:
    """Run a stage body with the sections of params.yaml it reads (``params``, a
    :class:`~eyelip.params.core.View`), validated first, unknown keys in them included. A stage imports,
    and so depends on, the schema of those sections only; the whole file (unknown sections, typos in any
    section, rules that join sections) is checked by ``check-data``, whose ``params`` is the whole
    :class:`~eyelip.params.whole.Params` and which DVC runs before every other stage. An EyelipError is
    printed as one line, exit status 1; Ctrl+C exits 130 and SIGTERM 143. Its MLflow run, if any, ends
    FAILED or KILLED."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        body(core.load(params))
    except EyelipError as exc:
        close_tracking(exc)
        print(f"eyelip {name}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        close_tracking(exc)
        how = "stopped (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"eyelip {name}: {how}; no partial output was kept", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT))
    except Exception as exc:  # a crash: the traceback as usual, and the run FAILED
        close_tracking(exc)
        raise
