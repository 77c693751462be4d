"""Task media: fetch a task's frames the way Label Studio serves them, with the security rules.

Decoded frames come back as :class:`backend.frames.LazyFrameSource` objects.
"""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import requests

from backend.frames import LazyFrameSource, MediaError, decode_image
from backend.ls.client import LabelStudioAuthError, LabelStudioConnection

_CLOUD_SCHEMES = ("s3", "gs", "azure-blob")


class MediaFetcher:
    """Fetches task media the way Label Studio serves it, with the security rules.

    * ``/data/local-files/?d=<rel>``: read from ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``
      when set (never outside it), else downloaded from Label Studio.
    * other relative URLs (``/data/upload/...``): downloaded from ``LABEL_STUDIO_URL``
      with the access token.
    * ``s3://``, ``gs://``, ``azure-blob://``: presigned by Label Studio for the task.
    * absolute ``http(s)`` URLs: Label Studio's own host (with token), or a host in
      ``ALLOWED_MEDIA_HOSTS`` (without token); anything else is refused (no SSRF).
    """

    def __init__(self, settings, connection=None, session=None):
        self.settings = settings
        self.connection = connection or LabelStudioConnection(settings)
        self._http = session or requests.Session()

    # -- URL classification -------------------------------------------------------------------
    def _ls_netloc(self) -> str:
        return urlsplit(self.settings.label_studio_url).netloc.lower()

    def _local_path(self, url: str) -> Path | None:
        root = self.settings.local_files_root
        parts = urlsplit(url)
        if root is None or not parts.path.rstrip("/").endswith("/data/local-files"):
            return None
        rel = parse_qs(parts.query).get("d", [""])[0]
        rel = unquote(rel)
        if not rel:
            raise MediaError(f"{url}: local-files URL without ?d=")
        base = Path(root).resolve()
        path = (base / rel).resolve()
        if base != path and base not in path.parents:
            raise MediaError(f"{url}: path escapes LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        return path

    def fetch(self, url: str, *, task_id: int | None = None) -> bytes:
        """Bytes of ``url`` (a task data value); :class:`MediaError` on any failure."""
        if not isinstance(url, str) or not url.strip():
            raise MediaError("frame URL is empty or not a string")
        url = url.strip()
        local = self._local_path(url)
        if local is not None:
            try:
                return local.read_bytes()
            except OSError as exc:
                raise MediaError(f"{url}: cannot read local file ({exc.strerror})") from None
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in _CLOUD_SCHEMES:
            return self._presigned(url, task_id)
        if scheme in ("http", "https"):
            host = parts.hostname or ""
            if parts.netloc.lower() == self._ls_netloc():
                return self._get(url, auth=True)
            if host.lower() in self.settings.allowed_media_hosts:
                return self._get(url, auth=False)
            raise MediaError(
                f"{url}: host {host!r} is not allowed; add it to ALLOWED_MEDIA_HOSTS "
                "or serve the frames through Label Studio"
            )
        if not scheme and url.startswith("/"):
            if not self.settings.label_studio_url:
                raise MediaError(
                    f"{url}: relative Label Studio URL but LABEL_STUDIO_URL is not set "
                    "(or set LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT for local files)"
                )
            return self._get(self.settings.label_studio_url + url, auth=True)
        raise MediaError(f"{url}: unsupported URL (use Label Studio storage or http(s))")

    def _presigned(self, url: str, task_id: int | None) -> bytes:
        if task_id is None or not self.settings.label_studio_url:
            raise MediaError(f"{url}: cloud URLs need LABEL_STUDIO_URL and a task id")
        uri = base64.urlsafe_b64encode(url.encode()).decode()
        presign = f"{self.settings.label_studio_url}/tasks/{task_id}/presign/?fileuri={uri}"
        return self._get(presign, auth=True)

    def _get(self, url: str, *, auth: bool) -> bytes:
        headers = {}
        if auth:
            if not self.connection.configured:
                raise MediaError(
                    f"{_redact(url)}: Label Studio media needs LABEL_STUDIO_API_KEY "
                    "(a personal access token)"
                )
            try:
                headers = self.connection.auth_header()
            except LabelStudioAuthError as exc:
                raise MediaError(str(exc)) from None
        try:
            resp = self._http.get(
                url,
                headers=headers,
                timeout=self.settings.media_timeout_s,
                verify=self.settings.verify_ssl,
                allow_redirects=True,
            )
        except requests.RequestException as exc:
            raise MediaError(f"{_redact(url)}: unreachable ({type(exc).__name__})") from None
        if resp.status_code in (401, 403):
            raise MediaError(
                f"{_redact(url)}: Label Studio answered {resp.status_code}; check "
                "LABEL_STUDIO_API_KEY (a personal access token from Account & Settings)"
            )
        if resp.status_code != 200:
            raise MediaError(f"{_redact(url)}: HTTP {resp.status_code}")
        return resp.content


def _redact(url: str) -> str:
    """URL without query-string secrets (presigned signatures, tokens)."""
    parts = urlsplit(url)
    if "local-files" in parts.path:
        return url
    return parts._replace(query="…" if parts.query else "").geturl()


class TaskFrameCache:
    """Per-task lazy frame sources, so repeated clicks on a task reuse decoded frames.

    Holds at most ``max_tasks`` tasks, each with an LRU of ``frames_per_task``
    decoded frames. Keyed by task id and the frame URL list.
    """

    def __init__(
        self,
        fetcher: MediaFetcher,
        *,
        max_tasks: int = 4,
        frames_per_task: int = 64,
        max_pixels: int | None = None,
    ):
        self.fetcher = fetcher
        self.max_tasks = max_tasks
        self.frames_per_task = frames_per_task
        self.max_pixels = max_pixels
        self._tasks: OrderedDict[tuple, LazyFrameSource] = OrderedDict()
        self._lock = threading.Lock()

    def frames(self, task_id: int | None, urls: Sequence[str]) -> LazyFrameSource:
        key = (task_id, tuple(urls))
        with self._lock:
            src = self._tasks.get(key)
            if src is not None:
                self._tasks.move_to_end(key)
                return src

        def load(i: int) -> np.ndarray:
            data = self.fetcher.fetch(urls[i], task_id=task_id)
            return decode_image(
                data, name=f"frame {i} ({_redact(urls[i])})", max_pixels=self.max_pixels
            )

        src = LazyFrameSource(len(urls), load, cache_size=self.frames_per_task)
        with self._lock:
            self._tasks[key] = src
            while len(self._tasks) > self.max_tasks:
                self._tasks.popitem(last=False)
        return src
