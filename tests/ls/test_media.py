"""Media fetching: local files, LS-hosted URLs with tokens, the host allow-list, bad frames."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import jwt
import numpy as np
import pytest

from backend.config import Settings
from backend.frames import FolderFrameSource, LazyFrameSource, MediaError, decode_image
from backend.ls.media import MediaFetcher, TaskFrameCache

JPEG = cv2.imencode(".jpg", np.full((24, 32, 3), 200, np.uint8))[1].tobytes()


def _jwt(kind: str, ttl: int) -> str:
    now = int(time.time())
    return jwt.encode(
        {"token_type": kind, "exp": now + ttl, "iat": now}, "k" * 32, algorithm="HS256"
    )


class FakeLS(BaseHTTPRequestHandler):
    """Serves /data/* only with a valid Authorization header; counts token refreshes."""

    seen: list[str] = []
    refreshes = 0
    access = _jwt("access", 10**6)  # long-lived: the suite may run this test minutes after import

    def log_message(self, *args):
        pass

    def do_POST(self):
        if self.path == "/api/token/refresh/":
            type(self).refreshes += 1
            body = json.dumps({"access": type(self).access}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        type(self).seen.append(auth)
        ok = auth in (f"Bearer {type(self).access}", "Token legacy-token")
        if self.path.startswith("/data/") or self.path.startswith("/public/"):
            if not ok and not self.path.startswith("/public/"):
                self.send_error(401)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG)
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def ls_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_personal_access_token_is_refreshed_to_a_bearer_jwt(ls_url):
    s = Settings(label_studio_url=ls_url, label_studio_api_key=_jwt("refresh", 10**8))
    f = MediaFetcher(s)
    assert f.fetch("/data/upload/1/a.jpg") == JPEG
    assert f.fetch("/data/upload/1/b.jpg") == JPEG
    assert FakeLS.seen[-1] == f"Bearer {FakeLS.access}"
    assert FakeLS.refreshes == 1  # the access token is reused while valid


def test_legacy_token(ls_url):
    f = MediaFetcher(Settings(label_studio_url=ls_url, label_studio_api_key="legacy-token"))
    assert f.fetch(f"{ls_url}/data/local-files/?d=x/1.jpg") == JPEG
    assert FakeLS.seen[-1] == "Token legacy-token"


def test_wrong_token_gives_a_clear_message(ls_url):
    f = MediaFetcher(Settings(label_studio_url=ls_url, label_studio_api_key="nope"))
    with pytest.raises(MediaError, match="401.*LABEL_STUDIO_API_KEY"):
        f.fetch("/data/upload/1/a.jpg")


def test_relative_url_without_label_studio_url():
    with pytest.raises(MediaError, match="LABEL_STUDIO_URL is not set"):
        MediaFetcher(Settings()).fetch("/data/upload/1/a.jpg")


def test_foreign_hosts_need_the_allow_list(ls_url):
    other = ls_url.replace("127.0.0.1", "localhost")
    f = MediaFetcher(Settings(label_studio_url=ls_url, label_studio_api_key="legacy-token"))
    with pytest.raises(MediaError, match="not allowed.*ALLOWED_MEDIA_HOSTS"):
        f.fetch(f"{other}/public/a.jpg")
    f = MediaFetcher(Settings(label_studio_url=ls_url, allowed_media_hosts=("localhost",)))
    assert f.fetch(f"{other}/public/a.jpg") == JPEG
    assert FakeLS.seen[-1] == "", "no token is sent to a foreign host"


def test_unreachable_host():
    f = MediaFetcher(Settings(allowed_media_hosts=("127.0.0.1",), media_timeout_s=2))
    with pytest.raises(MediaError, match="unreachable"):
        f.fetch("http://127.0.0.1:9/a.jpg")


@pytest.mark.parametrize("url", ["ftp://x/a.jpg", "file:///etc/passwd", "", "frames/a.jpg"])
def test_unsupported_urls(url):
    with pytest.raises(MediaError):
        MediaFetcher(Settings()).fetch(url)


def test_local_files_are_read_from_the_document_root(tmp_path):
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "0.jpg").write_bytes(JPEG)
    (tmp_path.parent / "secret.jpg").write_bytes(JPEG)
    f = MediaFetcher(Settings(local_files_root=tmp_path))
    assert f.fetch("/data/local-files/?d=clip/0.jpg") == JPEG
    assert f.fetch("/data/local-files/?d=clip%2F0.jpg") == JPEG
    with pytest.raises(MediaError, match="escapes"):
        f.fetch("/data/local-files/?d=../secret.jpg")
    with pytest.raises(MediaError, match="cannot read"):
        f.fetch("/data/local-files/?d=clip/missing.jpg")


def test_decode_errors_and_size_limit():
    assert decode_image(JPEG).shape == (24, 32, 3)
    with pytest.raises(MediaError, match="empty"):
        decode_image(b"")
    with pytest.raises(MediaError, match="not a readable image"):
        decode_image(b"GIF89a-garbage")
    with pytest.raises(MediaError, match="MAX_FRAME_PIXELS"):
        decode_image(JPEG, max_pixels=100)


def test_lazy_source_keeps_a_bounded_cache():
    loads = []
    src = LazyFrameSource(
        100, lambda i: loads.append(i) or np.zeros((2, 2, 3), np.uint8), cache_size=3
    )
    for i in list(range(10)) + [9, 8, 7, 0]:
        src[i]
    assert loads == list(range(10)) + [0]
    assert len(src._cache) == 3
    with pytest.raises(IndexError):
        src[100]


def test_task_cache_reuses_decoded_frames(tmp_path):
    (tmp_path / "0.jpg").write_bytes(JPEG)
    fetcher = MediaFetcher(Settings(local_files_root=tmp_path))
    cache = TaskFrameCache(fetcher, max_tasks=2)
    a = cache.frames(1, ["/data/local-files/?d=0.jpg"])
    assert cache.frames(1, ["/data/local-files/?d=0.jpg"]) is a
    cache.frames(2, ["/data/local-files/?d=0.jpg"])
    cache.frames(3, ["/data/local-files/?d=0.jpg"])
    assert cache.frames(1, ["/data/local-files/?d=0.jpg"]) is not a  # evicted


def test_folder_source(tmp_path):
    for i in (2, 0, 1):
        (tmp_path / f"{i:05d}.jpg").write_bytes(JPEG)
    (tmp_path / "notes.txt").write_text("x")
    src = FolderFrameSource(tmp_path)
    assert len(src) == 3 and [p.name for p in src.paths][0] == "00000.jpg"
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="no image files"):
        FolderFrameSource(tmp_path / "empty")
    with pytest.raises(MediaError, match="not a folder"):
        FolderFrameSource(tmp_path / "missing")
