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
from typing import Any

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


class LabelStudioError(RuntimeError):
    """A Label Studio API call failed; the message is one line that says what to fix."""


class ProjectAPI:
    """The few Label Studio REST calls a whole-project run needs (JSON in, JSON out), with
    one-line errors: unreachable, refused token, missing project or task."""

    def __init__(
        self, connection: LabelStudioConnection, *, timeout_s: float = 60.0, verify: bool = True
    ):
        self.connection = connection
        self.timeout_s = timeout_s
        self.verify = verify

    def check(self) -> None:
        """Fail early and clearly: settings missing, Label Studio down, token refused."""
        import requests

        if not self.connection.configured:
            raise LabelStudioError("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        try:
            requests.get(f"{self.connection.url}/health", timeout=min(self.timeout_s, 15.0),
                         verify=self.verify)  # fmt: skip
        except requests.RequestException as exc:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.connection.url} ({type(exc).__name__})"
            ) from None
        self.get("/api/current-user/whoami")

    def get(self, path: str, params: dict | None = None, *, what: str = "") -> Any:
        import requests

        try:
            headers = self.connection.auth_header()
        except LabelStudioAuthError as exc:
            raise LabelStudioError(str(exc)) from None
        try:
            resp = requests.get(f"{self.connection.url}{path}", params=params, headers=headers,
                                timeout=self.timeout_s, verify=self.verify)  # fmt: skip
        except requests.RequestException as exc:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.connection.url} ({type(exc).__name__})"
            ) from None
        if resp.status_code in (401, 403):
            raise LabelStudioError(
                f"Label Studio refused LABEL_STUDIO_API_KEY (HTTP {resp.status_code}) on {path}"
            )
        if resp.status_code == 404:
            raise LabelStudioError(f"{what or path}: not found in Label Studio (HTTP 404)")
        if resp.status_code != 200:
            raise LabelStudioError(f"{path}: Label Studio answered HTTP {resp.status_code}")
        return resp.json()

    def label_config(self, project_id: int) -> str:
        project = self.get(f"/api/projects/{project_id}", what=f"project {project_id}")
        return str(project.get("label_config") or "")

    def task_ids(self, project_id: int, page_size: int = 500) -> list[int]:
        """Every task id of the project, in Label Studio's order (no annotations fetched)."""
        ids: list[int] = []
        page = 1
        while True:
            body = self.get("/api/tasks", {"project": project_id, "page": page,
                                           "page_size": page_size, "fields": "task_only"},
                            what=f"project {project_id}")  # fmt: skip
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            ids += [int(t["id"]) for t in tasks if isinstance(t, dict) and "id" in t]
            total = body.get("total") if isinstance(body, dict) else None
            if not tasks or total is None or len(ids) >= int(total):
                return ids
            page += 1

    def task(self, task_id: int) -> dict[str, Any]:
        """The task with its annotations and predictions."""
        return self.get(f"/api/tasks/{task_id}", what=f"task {task_id}")

    def drafts(self, task_id: int) -> list[dict[str, Any]]:
        """Every annotator's drafts of the task."""
        body = self.get(f"/api/tasks/{task_id}/drafts", what=f"drafts of task {task_id}")
        return [d for d in body if isinstance(d, dict)] if isinstance(body, list) else []
