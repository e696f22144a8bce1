"""The ``runtime:`` section (:data:`eyelip.params.core.RUNTIME`): how fast and where, never what."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from eyelip.errors import ParamError
from eyelip.params.core import Section

Backend = Literal["loky", "threading", "sequential"]
Device = Literal["auto", "cpu", "cuda"]


class RuntimeParams(Section):
    n_jobs: int = Field(-1, ge=-1)
    backend: Backend = "loky"
    threads: int = Field(0, ge=0)
    device: Device = "auto"
    distributed: Literal["auto", False] = "auto"
    compile: bool = False

    @field_validator("n_jobs")
    @classmethod
    def _some_workers(cls, value: int) -> int:
        if value == 0:
            raise ParamError("runtime.n_jobs: 0 workers; use -1 for all cores or a positive count")
        return value

    def workers(self) -> dict[str, Any]:
        """joblib settings from ``runtime.n_jobs`` and ``runtime.backend``."""
        return {"n_jobs": self.n_jobs, "backend": self.backend}
