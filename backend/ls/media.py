"""Task media: fetch a task's frames the way Label Studio serves them, with the security rules.

Decoded frames come back as :class:`backend.frames.LazyFrameSource` objects.

Every URL that is requested, redirect targets included, goes through one parser
(:func:`parse_media_url`) and is requested exactly as that parser rebuilt it, so the
allow-list check and the connection can never disagree about the host. Each fetch has a
byte cap (``MAX_MEDIA_BYTES``) and a total deadline (``MEDIA_TIMEOUT_S``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import socket
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import numpy as np
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from backend.frames import LazyFrameSource, MediaError, decode_image
from backend.ls.client import LabelStudioAuthError, LabelStudioConnection

log = logging.getLogger(__name__)

_CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
MAX_REDIRECTS = 3
# Where Label Studio's presign endpoint may send us (besides ALLOWED_MEDIA_HOSTS), https only.
CLOUD_STORAGE_DOMAINS = ("amazonaws.com", "storage.googleapis.com", "blob.core.windows.net")
_REDIRECT_CODES = (301, 302, 303, 307, 308)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK = 64 * 1024
_NETLOC = re.compile(r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::(?P<port>[0-9]{1,5}))?", re.ASCII)
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@")
_REFUSED = (
    "URL refused (only plain http(s) URLs with a host name or IP address; no user info '@', "
    "backslashes, whitespace or control characters)"
)


# -- one parser for checks and requests ----------------------------------------------------------
@dataclass(frozen=True)
class MediaURL:
    """A validated absolute http(s) URL; :attr:`url` is exactly what gets requested."""

    scheme: str
    host: str  # lower case; an IPv6 address without brackets
    port: int | None  # as written; None for the scheme's default
    path: str
    query: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port or _DEFAULT_PORTS[self.scheme]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}{port}{self.path}{query}"


def _plain(text: str) -> bool:
    """No backslash, whitespace or control/format character anywhere."""
    return all(c.isprintable() and not c.isspace() and c != "\\" for c in text)


def parse_media_url(url: str) -> MediaURL:
    """Parse an http(s) URL strictly; :class:`MediaError` for anything a client could read
    differently (backslashes, user info, whitespace, control characters, odd hosts or ports).
    The fragment is dropped."""
    if not _plain(url):
        raise MediaError(f"{_redact(url)}: {_REFUSED}")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise MediaError(f"{_redact(url)}: {_REFUSED}") from None
    scheme = parts.scheme.lower()
    match = _NETLOC.fullmatch(parts.netloc.lower())
    if scheme not in _DEFAULT_PORTS or match is None:
        raise MediaError(f"{_redact(url)}: {_REFUSED}")
    host = match["host"]
    if host.startswith("["):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise MediaError(f"{_redact(url)}: {_REFUSED}") from None
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise MediaError(f"{_redact(url)}: {_REFUSED}")
    return MediaURL(scheme, host, port, parts.path or "/", parts.query)


def is_cloud_storage_host(host: str) -> bool:
    """A host of Amazon S3, Google Cloud Storage or Azure Blob Storage.

    Under ``amazonaws.com`` only S3 endpoints count (a label ``s3`` or ``s3-…``), not
    other AWS services such as EC2 host names.
    """
    labels = host.split(".")
    for domain in CLOUD_STORAGE_DOMAINS:
        if host != domain and not host.endswith("." + domain):
            continue
        if domain != "amazonaws.com":
            return True
        return any(label == "s3" or label.startswith("s3-") for label in labels[:-2])
    return False


def cloud_hop_refusal(target: MediaURL, allowed_hosts: Sequence[str]) -> str | None:
    """Why Label Studio's presign redirect may not go to ``target``; None when it may.

    Allowed: https to a host in ALLOWED_MEDIA_HOSTS or of a cloud storage domain, never
    to an IP address in a private, loopback, link-local or reserved range.
    """
    if target.scheme != "https":
        return "storage redirects must use https"
    try:
        ip = ipaddress.ip_address(target.host)
    except ValueError:
        ip = None
    if ip is not None and not ip.is_global:
        return "an IP address in a private, loopback or reserved range"
    if target.host in allowed_hosts or is_cloud_storage_host(target.host):
        return None
    return (
        "the host is neither in ALLOWED_MEDIA_HOSTS nor a cloud storage domain "
        f"({', '.join(CLOUD_STORAGE_DOMAINS)})"
    )


# -- the total deadline of one fetch ---------------------------------------------------------------
_active = threading.local()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Deadline:
    """The total time budget of one fetch (connect, TLS, headers and body, all hops).

    Socket timeouts bound each read, not their sum, so a server dripping a byte at a
    time would never trip them: at the deadline a timer shuts down (a duplicate of)
    every socket this fetch used, which ends any blocked read at once.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._socks: list[tuple[socket.socket, socket.socket]] = []  # (watched, duplicate)
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return self._end - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.expired or self.remaining() <= 0

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if any(s is sock for s, _ in self._socks):
                return
            try:
                dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except OSError:
                return
            self._socks.append((sock, dup))
            if self.expired:
                _shutdown(dup)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for _, dup in self._socks:
                _shutdown(dup)

    def __enter__(self) -> _Deadline:
        _active.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _active.deadline = None
        with self._lock:
            for _, dup in self._socks:
                dup.close()
            self._socks.clear()


def _watch(sock: socket.socket | None) -> None:
    deadline = getattr(_active, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _WatchedConnection:
    """Registers its socket with the calling thread's fetch deadline (mixin)."""

    def _new_conn(self):  # the raw socket, before any TLS handshake
        sock = super()._new_conn()  # type: ignore[misc]
        _watch(sock)
        return sock

    def getresponse(self, *args, **kwargs):  # also covers pooled keep-alive connections
        _watch(self.sock)  # type: ignore[attr-defined]
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """A requests adapter whose connections the fetch deadline can cut."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager


def _new_session() -> requests.Session:
    session = requests.Session()
    adapter = _WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# -- the fetcher ------------------------------------------------------------------------------------
class MediaFetcher:
    """Fetches task media the way Label Studio serves it, with the security rules.

    * ``/data/local-files/?d=<rel>``: read from ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``
      when set (never outside it), else downloaded from Label Studio.
    * other relative URLs (``/data/upload/...``): downloaded from ``LABEL_STUDIO_URL``
      with the access token.
    * ``s3://``, ``gs://``, ``azure-blob://``: presigned by Label Studio for the task; its
      one redirect may go to cloud storage (:func:`cloud_hop_refusal`).
    * absolute ``http(s)`` URLs: Label Studio's own origin (with token), or a host in
      ``ALLOWED_MEDIA_HOSTS`` (without token); anything else is refused (no SSRF).

    Redirects are followed only within one origin (``MEDIA_REDIRECTS``), at most
    :data:`MAX_REDIRECTS`, each re-checked. Downloads stop past ``MAX_MEDIA_BYTES`` or
    ``MEDIA_TIMEOUT_S`` (the total time of one fetch).
    """

    def __init__(self, settings, connection=None, session=None):
        self.settings = settings
        self.connection = connection or LabelStudioConnection(settings)
        self._http = session or _new_session()
        self._ls: MediaURL | None = None
        if settings.label_studio_url:
            try:
                self._ls = parse_media_url(settings.label_studio_url)
            except MediaError:
                log.warning("LABEL_STUDIO_URL is not a plain http(s) URL; Label Studio media off")

    # -- URL classification -------------------------------------------------------------------
    def _is_ls(self, target: MediaURL) -> bool:
        return self._ls is not None and target.origin == self._ls.origin

    def _local_path(self, url: str) -> Path | None:
        root = self.settings.local_files_root
        parts = urlsplit(url)
        if root is None or not parts.path.rstrip("/").endswith("/data/local-files"):
            return None
        rel = parse_qs(parts.query).get("d", [""])[0]
        rel = unquote(rel)
        if not rel:
            raise MediaError(f"{url}: local-files URL without ?d=")
        if not rel.isprintable():
            raise MediaError(f"{_redact(url)}: control characters in a local-files path")
        base = Path(root).resolve()
        path = (base / rel).resolve()
        if base != path and base not in path.parents:
            raise MediaError(f"{url}: path escapes LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        return path

    def fetch(
        self,
        url: str,
        *,
        task_id: int | None = None,
        sink: BinaryIO | None = None,
        max_bytes: int | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        """Bytes of ``url`` (a task data value); :class:`MediaError` on any failure.

        With ``sink`` the body is streamed into it (b"" is returned): a video never sits in
        memory. ``max_bytes``/``timeout_s`` replace MAX_MEDIA_BYTES/MEDIA_TIMEOUT_S.
        """
        kw = {"sink": sink, "cap": max_bytes, "timeout_s": timeout_s}
        if not isinstance(url, str) or not url.strip():
            raise MediaError("frame URL is empty or not a string")
        url = url.strip()
        try:
            local = self._local_path(url)
            scheme = urlsplit(url).scheme.lower()
        except MediaError:
            raise
        except ValueError:  # e.g. an unbalanced IPv6 bracket
            raise MediaError(f"{_redact(url)}: {_REFUSED}") from None
        if local is not None:
            return self._read_local(url, local)
        if scheme in _CLOUD_SCHEMES:
            return self._presigned(url, task_id, **kw)
        if scheme in ("http", "https"):
            target = parse_media_url(url)
            if self._is_ls(target):
                return self._get(target, auth=True, **kw)
            if target.host in self.settings.allowed_media_hosts:
                return self._get(target, auth=False, **kw)
            raise MediaError(
                f"{_redact(url)}: host {target.host!r} is not allowed; add it to "
                "ALLOWED_MEDIA_HOSTS or serve the frames through Label Studio"
            )
        if not scheme and url.startswith("/"):
            if not self.settings.label_studio_url:
                raise MediaError(
                    f"{url}: relative Label Studio URL but LABEL_STUDIO_URL is not set "
                    "(or set LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT for local files)"
                )
            return self._get(parse_media_url(self.settings.label_studio_url + url), auth=True, **kw)
        raise MediaError(f"{_redact(url)}: unsupported URL (use Label Studio storage or http(s))")

    def _read_local(self, url: str, path: Path) -> bytes:
        cap = self.settings.max_media_bytes
        try:
            if path.exists() and not path.is_file():
                raise MediaError(f"{url}: cannot read local file (not a regular file)")
            with path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise MediaError(f"{url}: cannot read local file (not a regular file)")
                if st.st_size > cap:
                    raise MediaError(f"{url}: {st.st_size} bytes exceeds MAX_MEDIA_BYTES={cap}")
                data = fh.read(cap + 1)
        except OSError as exc:
            raise MediaError(f"{url}: cannot read local file ({exc.strerror})") from None
        if len(data) > cap:
            raise MediaError(f"{url}: larger than MAX_MEDIA_BYTES={cap}")
        return data

    def _presigned(self, url: str, task_id: int | None, **kw: Any) -> bytes:
        if task_id is None or not self.settings.label_studio_url:
            raise MediaError(f"{url}: cloud URLs need LABEL_STUDIO_URL and a task id")
        uri = base64.urlsafe_b64encode(url.encode()).decode()
        presign = f"{self.settings.label_studio_url}/tasks/{task_id}/presign/?fileuri={uri}"
        return self._get(parse_media_url(presign), auth=True, presign=True, **kw)

    # -- HTTP -------------------------------------------------------------------------------------
    def _auth_header(self, target: MediaURL) -> dict[str, str]:
        if not self.connection.configured:
            raise MediaError(
                f"{_redact(target.url)}: Label Studio media needs LABEL_STUDIO_API_KEY "
                "(a personal access token)"
            )
        try:
            return self.connection.auth_header()
        except LabelStudioAuthError as exc:
            raise MediaError(str(exc)) from None

    def _get(
        self,
        target: MediaURL,
        *,
        auth: bool,
        presign: bool = False,
        sink: BinaryIO | None = None,
        cap: int | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        """GET ``target`` and its allowed redirects within one deadline and byte cap."""
        token = self._auth_header(target) if auth else {}
        cloud_hop_left = presign
        hops = 0
        with _Deadline(timeout_s or self.settings.media_timeout_s) as deadline:
            while True:
                headers = token if self._is_ls(target) else {}
                resp = self._request(target, headers, deadline)
                try:
                    if resp.status_code not in _REDIRECT_CODES:
                        self._check_status(resp, target)
                        return self._read_body(resp, target, deadline, sink, cap)
                    hops += 1
                    if hops > MAX_REDIRECTS:
                        raise MediaError(
                            f"{_redact(target.url)}: more than {MAX_REDIRECTS} redirects"
                        )
                    target, cloud = self._redirect(
                        target,
                        resp.headers.get("Location"),
                        cloud_hop=cloud_hop_left and self._is_ls(target),
                    )
                    cloud_hop_left = cloud_hop_left and not cloud
                finally:
                    resp.close()

    def _request(self, target: MediaURL, headers: dict, deadline: _Deadline):
        remaining = deadline.remaining()
        if remaining <= 0:
            raise self._timeout(target)
        try:
            return self._http.get(
                target.url,
                headers=headers,
                timeout=(remaining, remaining),
                verify=self.settings.verify_ssl,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as exc:
            raise self._transport_error(target, exc, deadline) from None

    def _redirect(
        self, current: MediaURL, location: str | None, *, cloud_hop: bool
    ) -> tuple[MediaURL, bool]:
        """The checked next hop and whether it is the presign hop to cloud storage."""
        here = _redact(current.url)
        if not location:
            raise MediaError(f"{here}: redirect without a Location header")
        if not _plain(location):
            raise MediaError(f"{here}: redirected to {_redact(location)}: {_REFUSED}")
        nxt = parse_media_url(urljoin(current.url, location))
        if nxt.origin == current.origin:
            if self.settings.media_redirects == "off":
                raise MediaError(f"{here}: redirected, but MEDIA_REDIRECTS=off")
            return nxt, False
        if cloud_hop:
            reason = cloud_hop_refusal(nxt, self.settings.allowed_media_hosts)
            if reason is None:
                return nxt, True
            log.warning("refused storage redirect to %s: %s", _redact(nxt.url), reason)
            raise MediaError(
                f"{here}: Label Studio redirected to {_redact(nxt.url)}, refused: {reason}"
            )
        log.warning("refused cross-origin redirect %s -> %s", here, _redact(nxt.url))
        raise MediaError(
            f"{here}: redirect to another origin ({_redact(nxt.url)}) refused; media "
            "redirects are followed only within the same scheme, host and port"
        )

    def _check_status(self, resp: requests.Response, target: MediaURL) -> None:
        if resp.status_code in (401, 403) and self._is_ls(target):
            raise MediaError(
                f"{_redact(target.url)}: Label Studio answered {resp.status_code}; check "
                "LABEL_STUDIO_API_KEY (a personal access token from Account & Settings)"
            )
        if resp.status_code != 200:
            raise MediaError(f"{_redact(target.url)}: HTTP {resp.status_code}")

    def _read_body(
        self,
        resp: requests.Response,
        target: MediaURL,
        deadline: _Deadline,
        sink: BinaryIO | None = None,
        cap: int | None = None,
    ) -> bytes:
        cap = cap or self.settings.max_media_bytes
        declared = resp.headers.get("Content-Length", "").strip()
        if declared.isdigit() and int(declared) > cap:
            raise MediaError(
                f"{_redact(target.url)}: {int(declared)} bytes exceeds MAX_MEDIA_BYTES={cap}"
            )
        body, size = bytearray(), 0
        try:
            for chunk in resp.iter_content(chunk_size=_CHUNK):
                size += len(chunk)
                if sink is None:
                    body += chunk
                else:
                    sink.write(chunk)
                if size > cap:
                    raise MediaError(f"{_redact(target.url)}: larger than MAX_MEDIA_BYTES={cap}")
                if deadline.passed:
                    raise self._timeout(target)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._transport_error(target, exc, deadline) from None
        if deadline.passed:
            raise self._timeout(target)
        return bytes(body)

    def _timeout(self, target: MediaURL) -> MediaError:
        return MediaError(
            f"{_redact(target.url)}: not complete within MEDIA_TIMEOUT_S="
            f"{self.settings.media_timeout_s:g} s (the limit for one whole fetch)"
        )

    def _transport_error(self, target: MediaURL, exc: Exception, deadline: _Deadline) -> MediaError:
        if deadline.passed or isinstance(exc, requests.Timeout):
            return self._timeout(target)
        return MediaError(f"{_redact(target.url)}: unreachable ({type(exc).__name__})")


def _redact(url: str) -> str:
    """URL for messages: no query-string secrets (presigned signatures, tokens), no user
    info, control characters escaped, at most 300 characters."""
    if "local-files" not in url and "?" in url:
        url = url.split("?", 1)[0] + "?…"
    url = _USERINFO.sub(r"\1…@", url)
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in url)
    return shown if len(shown) <= 300 else shown[:300] + "…"


class VideoFiles:
    """A task's video as a local file, for random-access decoding by timestamp.

    Local-files URLs under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT are used in place; any other
    URL is streamed under the same rules as frames into ``folder`` (at most ``max_bytes``,
    within ``timeout_s``), which keeps the ``keep`` most recently used videos.
    """

    def __init__(
        self,
        fetcher: MediaFetcher,
        folder: Path,
        *,
        keep: int = 8,
        max_bytes: int | None = None,
        timeout_s: float | None = None,
    ):
        self.fetcher = fetcher
        self.folder = Path(folder)
        self.keep = keep
        self.max_bytes = max_bytes  # None: MAX_MEDIA_BYTES
        self.timeout_s = timeout_s  # None: MEDIA_TIMEOUT_S
        self._lock = threading.Lock()

    def path(self, url: str, *, task_id: int | None = None) -> Path:
        local = self.fetcher._local_path(url.strip()) if isinstance(url, str) else None
        if local is not None:
            if not local.is_file():
                raise MediaError(f"{_redact(url)}: no such video file under the local-files root")
            return local
        suffix = Path(urlsplit(url).path).suffix.lower()[:8] or ".video"
        name = hashlib.sha1(url.encode("utf-8", "surrogatepass")).hexdigest()[:24] + suffix
        target = self.folder / name
        with self._lock:
            if target.is_file():
                os.utime(target)
                return target
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + f".{threading.get_ident()}.part")
        try:
            with tmp.open("wb") as sink:  # streamed: the video never sits in memory
                self.fetcher.fetch(url, task_id=task_id, sink=sink, max_bytes=self.max_bytes,
                                   timeout_s=self.timeout_s)  # fmt: skip
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            videos = sorted(self.folder.glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in videos[self.keep :]:
                old.unlink(missing_ok=True)
        return target


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
