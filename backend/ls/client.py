"""Connection to Label Studio: auth headers and the SDK client.

``LABEL_STUDIO_API_KEY`` may be a Personal Access Token (a JWT refresh
token, exchanged by label-studio-sdk for a 5-minute access JWT, refreshed as
needed) or a legacy token (sent as ``Token <key>``). Tokens never reach logs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import cached_property

from backend.config import Settings

log = logging.getLogger(__name__)


class LabelStudioAuthError(RuntimeError):
    """Label Studio refused our token or cannot be reached for auth."""


class LabelStudioConnection:
    """Lazily built SDK client for ``settings.label_studio_url``."""

    def __init__(self, settings: Settings):
        self.url = settings.label_studio_url
        self._api_key = settings.label_studio_api_key
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.url and self._api_key)

    @cached_property
    def client(self):
        """The label-studio-sdk ``LabelStudio`` client (PAT refresh handled by the SDK)."""
        from label_studio_sdk.client import LabelStudio

        if not self.configured:
            raise LabelStudioAuthError(
                "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set to reach Label Studio"
            )
        try:
            return LabelStudio(base_url=self.url, api_key=self._api_key)
        except Exception as exc:  # the SDK raises ApiError for expired/invalid JWTs
            raise LabelStudioAuthError(f"LABEL_STUDIO_API_KEY rejected: {_safe(exc)}") from None

    def auth_header(self) -> dict[str, str]:
        """``Authorization`` header for LS-hosted media (fresh access JWT or legacy token)."""
        with self._lock:
            try:
                headers = self.client._client_wrapper.get_headers()
            except LabelStudioAuthError:
                raise
            except Exception as exc:
                raise LabelStudioAuthError(
                    f"cannot get an access token from {self.url}: {_safe(exc)}"
                ) from None
        return {"Authorization": headers["Authorization"]}


def _safe(exc: Exception) -> str:
    """Exception text without anything that looks like a token."""
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "…"


def replace_prediction(
    connection: LabelStudioConnection,
    task_id: int,
    prediction: dict,
    *,
    model_version: str,
    is_current: Callable[[], bool] | None = None,
) -> int | None:
    """Create ``prediction`` for the task, then delete our older ones (same model_version).

    Creating first means the task never lacks a prediction; each call is one atomic API
    request, so Label Studio never holds a half-written one. Only predictions older than
    the new one (a smaller id) are deleted, never one another job created meanwhile.
    ``is_current()`` (is this still the newest request of the task?) is asked before
    creating and again before deleting: if not, nothing is written, or the prediction just
    created is deleted again. Returns the new prediction's id, None when not written.
    """
    current = is_current or (lambda: True)
    client = connection.client
    if not current():
        log.info("task %s: prediction not written: a newer request for the task exists", task_id)
        return None
    created = client.predictions.create(
        task=task_id,
        result=prediction["result"],
        score=prediction.get("score"),
        model_version=model_version,
    )
    try:
        still_current = current()
    except Exception:  # cannot tell: a stale prediction must not stay
        client.predictions.delete(id=created.id)
        raise
    if not still_current:
        client.predictions.delete(id=created.id)
        log.info("task %s: prediction %s withdrawn: a newer request came in", task_id, created.id)
        return None
    older = [
        p.id
        for p in client.predictions.list(task=task_id)
        if getattr(p, "model_version", None) == model_version
        and isinstance(p.id, int)
        and p.id < created.id
    ]
    for pid in older:
        client.predictions.delete(id=pid)
    log.info("task %s: prediction %s written (%d older removed)", task_id, created.id, len(older))
    return created.id
