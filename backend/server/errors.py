"""Error types of the HTTP layer and how each maps to a status code."""

from __future__ import annotations

from backend.engine import EngineError
from backend.frames import MediaError
from backend.jobs import JobStoreError
from backend.ls.client import LabelStudioAuthError
from backend.ls.labelconfig import LabelConfigError
from backend.ls.prompts import PromptError
from backend.ls.tasks import TaskError
from backend.runs import BusyError


class RequestError(ValueError):
    """The request body is invalid; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# Most specific first. Everything else is a 500 with a generic message.
STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (RequestError, 400),
    (TaskError, 400),
    (LabelConfigError, 422),
    (PromptError, 422),
    (MediaError, 422),
    (LabelStudioAuthError, 502),
    (EngineError, 503),
    (BusyError, 503),
    (JobStoreError, 503),
)


def status_for(exc: BaseException) -> int | None:
    """HTTP status for a known error type, None for unexpected errors."""
    if isinstance(exc, RequestError):
        return exc.status
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return None
