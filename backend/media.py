"""Frame sources: random access to the frames of one video, one at a time.

A :class:`FrameSource` never holds a whole video in memory; implementations
decode on demand and may keep a small bounded cache. Frames are H×W×3 uint8
RGB arrays at their native size.
"""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

import cv2
import numpy as np
import requests

from backend.lsclient import LabelStudioAuthError, LabelStudioConnection

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class MediaError(ValueError):
    """A frame could not be fetched or decoded; the message says which and why."""


@runtime_checkable
class FrameSource(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` as H×W×3 uint8 RGB."""
        ...


def decode_image(data: bytes, *, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to H×W×3 uint8 RGB, with a clear error."""
    if not data:
        raise MediaError(f"{name}: empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"{name}: not a readable image (corrupt or unsupported format)")
    if max_pixels is not None and bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise MediaError(
            f"{name}: {bgr.shape[1]}x{bgr.shape[0]} exceeds the frame size limit "
            f"of {max_pixels} pixels (MAX_FRAME_PIXELS)"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise MediaError(f"{p.name}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, name=p.name, max_pixels=max_pixels)


class ArrayFrameSource:
    """Frames already in memory (tests, small clips)."""

    def __init__(self, frames: Sequence[np.ndarray]):
        self._frames = frames

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self._frames):
            raise IndexError(index)
        return self._frames[index]


class LazyFrameSource:
    """Frames produced on demand by ``load(i)``, with a bounded LRU cache.

    Thread-safe; the cache holds at most ``cache_size`` decoded frames.
    """

    def __init__(self, count: int, load: Callable[[int], np.ndarray], *, cache_size: int = 8):
        self._count = count
        self._load = load
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(0, cache_size)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self._count:
            raise IndexError(index)
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        frame = self._load(index)
        if self._cache_size:
            with self._lock:
                self._cache[index] = frame
                self._cache.move_to_end(index)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return frame


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files of a folder in natural (sorted) order."""
    root = Path(folder)
    if not root.is_dir():
        raise MediaError(f"{root}: not a folder")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


class FolderFrameSource(LazyFrameSource):
    """The sorted image files of a folder, decoded lazily."""

    def __init__(self, folder: str | Path, *, cache_size: int = 8, max_pixels: int | None = None):
        self.paths = list_image_files(folder)
        super().__init__(
            len(self.paths),
            lambda i: read_image(self.paths[i], max_pixels=max_pixels),
            cache_size=cache_size,
        )


# --------------------------------------------------------------------------- fetching task media

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
