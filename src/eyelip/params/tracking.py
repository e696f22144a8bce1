"""The ``tracking:`` section: the MLflow experiment."""

from __future__ import annotations

from pydantic import Field

from eyelip.params.core import Section


class TrackingParams(Section):
    experiment: str = Field("eyelip", min_length=1, pattern=r"\S")
