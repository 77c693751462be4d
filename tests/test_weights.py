"""Checkpoint registry and downloader, against a loopback HTTP server (nothing leaves 127.0.0.1)."""

from __future__ import annotations

import argparse
import hashlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from backend import weights
from backend.weights import ChecksumError, WeightsError, WeightSpec

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a multiple of the chunk size


class FakeServer:
    """Serves PAYLOAD at /fake.pth; can ignore Range, drop a response mid-way, or lie."""

    def __init__(self) -> None:
        self.data = PAYLOAD
        self.support_range = True
        self.drops_left = 0  # responses to cut after half of their body
        self.requests: list[str | None] = []  # the Range header of each request
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                rng = self.headers.get("Range")
                server.requests.append(rng)
                if self.path != "/fake.pth":
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if match and server.support_range:
                    start = int(match.group(1))
                    if start >= len(server.data):
                        self.send_error(416)
                        return
                body = server.data[start:]
                self.send_response(206 if start else 200)
                if start:
                    end = len(server.data) - 1
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(server.data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if server.drops_left:
                        server.drops_left -= 1
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up early (it does when it rejects the size)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/fake.pth"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    with FakeServer() as srv:
        yield srv


def _register(monkeypatch, url: str, **overrides) -> WeightSpec:  # noqa: ANN001
    fields = dict(
        name="fake",
        filename="fake.pth",
        url=url,
        size=len(PAYLOAD),
        md5=hashlib.md5(PAYLOAD).hexdigest(),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        description="test file",
        provenance="test",
    )
    fields.update(overrides)
    spec = WeightSpec(**fields)
    monkeypatch.setitem(weights.REGISTRY, "fake", spec)
    return spec


def _download(tmp_path: Path, **kw) -> Path:  # noqa: ANN003
    kw.setdefault("progress", False)
    return weights.download("fake", tmp_path, backoff_s=0.0, timeout=10.0, **kw)


def test_full_download_reports_progress(server, tmp_path, monkeypatch):
    _register(monkeypatch, server.url)
    seen: list[tuple[int, int | None]] = []
    path = _download(tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "fake.pth"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "fake.pth.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert server.requests == [None]
    # a second call finds the verified file and does not touch the network
    assert _download(tmp_path) == path
    assert len(server.requests) == 1


def test_resumes_after_connection_drop(server, tmp_path, monkeypatch):
    _register(monkeypatch, server.url)
    server.drops_left = 1
    path = _download(tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[0] is None
    assert server.requests[1] == f"bytes={len(PAYLOAD) // 2}-"


def test_resumes_a_part_file_left_by_an_earlier_run(server, tmp_path, monkeypatch):
    _register(monkeypatch, server.url)
    (tmp_path / "fake.pth.part").write_bytes(PAYLOAD[:1000])
    assert _download(tmp_path).read_bytes() == PAYLOAD
    assert server.requests == ["bytes=1000-"]


def test_server_without_range_support_restarts_from_zero(server, tmp_path, monkeypatch):
    _register(monkeypatch, server.url)
    server.support_range = False
    (tmp_path / "fake.pth.part").write_bytes(b"x" * 1000)  # would corrupt the file if appended
    assert _download(tmp_path).read_bytes() == PAYLOAD
    server.drops_left = 1
    (tmp_path / "fake.pth").unlink()
    assert _download(tmp_path).read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_partial_and_raises(server, tmp_path, monkeypatch):
    _register(monkeypatch, server.url, sha256="0" * 64)
    with pytest.raises(ChecksumError, match="sha256"):
        _download(tmp_path)
    assert not (tmp_path / "fake.pth").exists()
    assert not (tmp_path / "fake.pth.part").exists()


def test_size_mismatch_is_caught_before_downloading(server, tmp_path, monkeypatch):
    _register(monkeypatch, server.url, size=len(PAYLOAD) + 1)
    with pytest.raises(ChecksumError, match="registry expects"):
        _download(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_gives_up_after_retries_but_keeps_the_part(server, tmp_path, monkeypatch):
    _register(monkeypatch, server.url)
    server.drops_left = 10
    with pytest.raises(WeightsError, match="resume"):
        _download(tmp_path, retries=1)
    part = tmp_path / "fake.pth.part"
    assert 0 < part.stat().st_size < len(PAYLOAD)
    server.drops_left = 0
    assert _download(tmp_path).read_bytes() == PAYLOAD


def test_url_override_and_http_errors(server, tmp_path, monkeypatch):
    _register(monkeypatch, server.url.replace("fake.pth", "missing.pth"))
    with pytest.raises(WeightsError, match="HTTP 404"):
        _download(tmp_path)
    assert _download(tmp_path, url=server.url).read_bytes() == PAYLOAD


def test_no_checksum_entry_downloads_and_verifies_as_unverified(server, tmp_path, monkeypatch):
    _register(monkeypatch, server.url, size=None, md5=None, sha256=None)
    path = _download(tmp_path)
    report = weights.verify(path, "fake")
    assert report.checked == () and not report.fully_verified


def test_verify(tmp_path, monkeypatch):
    _register(monkeypatch, "http://127.0.0.1:9/unused")
    good = tmp_path / "good.pth"
    good.write_bytes(PAYLOAD)
    assert weights.verify(good, "fake").checked == ("size", "md5", "sha256")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(PAYLOAD[:-1] + b"X")
    with pytest.raises(ChecksumError, match="md5"):
        weights.verify(bad, "fake")
    with pytest.raises(WeightsError, match="unknown checkpoint"):
        weights.verify(good, "nope")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    weights.add_arguments(parser)
    return weights.main(parser.parse_args(argv))


def test_cli_download_list_verify(server, tmp_path, monkeypatch, capsys):
    _register(monkeypatch, "http://127.0.0.1:9/unused")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    assert _cli(["download", "fake", "--url", server.url, "--quiet"]) == 0
    assert (tmp_path / "fake.pth").read_bytes() == PAYLOAD
    assert _cli(["list"]) == 0
    out = capsys.readouterr().out
    assert "sam_vit_b" in out and "xmem_s012" in out and "present" in out
    assert _cli(["verify", str(tmp_path / "fake.pth"), "--name", "fake"]) == 0
    assert _cli(["verify", str(tmp_path / "fake.pth"), "--name", "sam_vit_b"]) == 1


def test_registry_is_consistent():
    sam2 = {
        f"{v}_hiera_{s}"
        for v in ("sam2", "sam2.1")
        for s in ("tiny", "small", "base_plus", "large")
    }
    assert (
        set(weights.REGISTRY) == {"sam_vit_b", "sam_vit_l", "sam_vit_h", "xmem", "xmem_s012"} | sam2
    )
    for name, spec in weights.REGISTRY.items():
        assert spec.name == name
        assert spec.url.startswith("https://") and spec.url.endswith("/" + spec.filename)
        if name in sam2:  # the loader reads the model from these official file names
            from backend.sam2_engine.model import model_from_filename

            model = model_from_filename(Path(spec.filename))
            assert model and model in spec.description and not spec.has_checksum
            continue
        if name.startswith("sam_"):
            # the official file names carry the first 6 hex digits of the md5
            assert spec.md5 and spec.md5.startswith(spec.filename.split("_")[-1][:6])
            assert spec.sha256 and len(spec.sha256) == 64 and spec.size
        else:
            assert spec.md5 is None and spec.sha256 is None
