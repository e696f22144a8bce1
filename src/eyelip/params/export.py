"""The ``export:`` section: the registered model and latency measurement."""

from __future__ import annotations

from pydantic import Field

from eyelip.params.core import Section


class ExportParams(Section):
    # A quote would break registry searches.
    registered_model: str = Field("eyelip", pattern=r"^[^/:@']*[^/:@'\s][^/:@']*$")
    latency_repeats: int = Field(10, ge=1)
