"""Registry of the official model checkpoints, and a resumable, verified downloader.

``python -m backend weights list | download NAME [--dir D] [--url U] | verify FILE --name NAME``

Downloads go to ``<dir>/<filename>.part`` (resumed with an HTTP ``Range`` request after an
interruption, also across runs), are checked against the registry's size and checksum, and only
then renamed to ``<dir>/<filename>``. Nothing here runs at import time.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int | None], None]

_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_XMEM_URL = "https://github.com/hkchengrex/XMem/releases/download/v1.0/"
_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/"
_SAM2_PROVENANCE = (
    "URL: the sam2 repository's checkpoint download script (SAM 2.1: release 092824, SAM 2: "
    "072824). Meta publishes no size or hash. Unverified; the size given is that of a state "
    "dict of the same structure (float32 tensor bytes, the file adds a little)."
)
_SAM_PROVENANCE = (
    "URL: segment-anything README. The 6-hex suffix of the file name is the start of the md5 "
    "(official). Full md5, sha256 and size: not published by Meta; consistent across several "
    "independent third-party manifests (not checked against a download here)."
)
_XMEM_PROVENANCE = (
    "URL: XMem README / GitHub release v1.0. No size or hash is published; about 249 MB "
    "(a state_dict of the same structure saves to 249,011,151 bytes). Unverified."
)


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable checkpoint. ``size``/``md5``/``sha256`` are ``None`` when unknown."""

    name: str
    filename: str
    url: str
    size: int | None
    md5: str | None
    sha256: str | None
    description: str
    provenance: str

    @property
    def has_checksum(self) -> bool:
        return bool(self.md5 or self.sha256)


REGISTRY: dict[str, WeightSpec] = {
    "sam_vit_b": WeightSpec(
        name="sam_vit_b",
        filename="sam_vit_b_01ec64.pth",
        url=_SAM_URL + "sam_vit_b_01ec64.pth",
        size=375_042_383,
        md5="01ec64d29a2fca3f0661936605ae66f8",
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        description="SAM ViT-B (SAM_MODEL_TYPE=vit_b); recommended on CPU",
        provenance=_SAM_PROVENANCE,
    ),
    "sam_vit_l": WeightSpec(
        name="sam_vit_l",
        filename="sam_vit_l_0b3195.pth",
        url=_SAM_URL + "sam_vit_l_0b3195.pth",
        size=1_249_524_607,
        md5="0b3195507c641ddb6910d2bb5adee89c",
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        description="SAM ViT-L (SAM_MODEL_TYPE=vit_l)",
        provenance=_SAM_PROVENANCE,
    ),
    "sam_vit_h": WeightSpec(
        name="sam_vit_h",
        filename="sam_vit_h_4b8939.pth",
        url=_SAM_URL + "sam_vit_h_4b8939.pth",
        size=2_564_550_879,
        md5="4b8939a88964f0f4ff5f5b2642c598a6",
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        description="SAM ViT-H (SAM_MODEL_TYPE=vit_h); Track-Anything's default, GPU advised",
        provenance=_SAM_PROVENANCE,
    ),
    "sam2.1_hiera_tiny": WeightSpec(
        name="sam2.1_hiera_tiny",
        filename="sam2.1_hiera_tiny.pt",
        url=_SAM2_URL + "092824/sam2.1_hiera_tiny.pt",
        size=None,
        md5=None,
        sha256=None,
        description="SAM 2.1 Hiera tiny (SAM2_MODEL=sam2.1_hiera_t), about 156 MB; fastest; recommended on CPU",
        provenance=_SAM2_PROVENANCE,
    ),
    "sam2.1_hiera_small": WeightSpec(
        name="sam2.1_hiera_small",
        filename="sam2.1_hiera_small.pt",
        url=_SAM2_URL + "092824/sam2.1_hiera_small.pt",
        size=None,
        md5=None,
        sha256=None,
        description="SAM 2.1 Hiera small (SAM2_MODEL=sam2.1_hiera_s), about 184 MB",
        provenance=_SAM2_PROVENANCE,
    ),
    "sam2.1_hiera_base_plus": WeightSpec(
        name="sam2.1_hiera_base_plus",
        filename="sam2.1_hiera_base_plus.pt",
        url=_SAM2_URL + "092824/sam2.1_hiera_base_plus.pt",
        size=None,
        md5=None,
        sha256=None,
        description="SAM 2.1 Hiera base+ (SAM2_MODEL=sam2.1_hiera_b+), about 323 MB",
        provenance=_SAM2_PROVENANCE,
    ),
    "sam2.1_hiera_large": WeightSpec(
        name="sam2.1_hiera_large",
        filename="sam2.1_hiera_large.pt",
        url=_SAM2_URL + "092824/sam2.1_hiera_large.pt",
        size=None,
        md5=None,
        sha256=None,
        description="SAM 2.1 Hiera large (SAM2_MODEL=sam2.1_hiera_l), about 898 MB; most accurate, GPU",
        provenance=_SAM2_PROVENANCE,
    ),
    "sam2_hiera_tiny": WeightSpec(
        name="sam2_hiera_tiny",
        filename="sam2_hiera_tiny.pt",
        url=_SAM2_URL + "072824/sam2_hiera_tiny.pt",
        size=None,
        md5=None,
        sha256=None,
        description="SAM 2 Hiera tiny (SAM2_MODEL=sam2_hiera_t), about 156 MB; fastest; recommended on CPU",
        provenance=_SAM2_PROVENANCE,
    ),
    "sam2_hiera_small": WeightSpec(
        name="sam2_hiera_small",
        filename="sam2_hiera_small.pt",
        url=_SAM2_URL + "072824/sam2_hiera_small.pt",
        size=None,
        md5=None,
        sha256=None,
        description="SAM 2 Hiera small (SAM2_MODEL=sam2_hiera_s), about 184 MB",
        provenance=_SAM2_PROVENANCE,
    ),
    "sam2_hiera_base_plus": WeightSpec(
        name="sam2_hiera_base_plus",
        filename="sam2_hiera_base_plus.pt",
        url=_SAM2_URL + "072824/sam2_hiera_base_plus.pt",
        size=None,
        md5=None,
        sha256=None,
        description="SAM 2 Hiera base+ (SAM2_MODEL=sam2_hiera_b+), about 323 MB",
        provenance=_SAM2_PROVENANCE,
    ),
    "sam2_hiera_large": WeightSpec(
        name="sam2_hiera_large",
        filename="sam2_hiera_large.pt",
        url=_SAM2_URL + "072824/sam2_hiera_large.pt",
        size=None,
        md5=None,
        sha256=None,
        description="SAM 2 Hiera large (SAM2_MODEL=sam2_hiera_l), about 898 MB; most accurate, GPU",
        provenance=_SAM2_PROVENANCE,
    ),
    "xmem": WeightSpec(
        name="xmem",
        filename="XMem.pth",
        url=_XMEM_URL + "XMem.pth",
        size=None,
        md5=None,
        sha256=None,
        description="XMem, default release model",
        provenance=_XMEM_PROVENANCE,
    ),
    "xmem_s012": WeightSpec(
        name="xmem_s012",
        filename="XMem-s012.pth",
        url=_XMEM_URL + "XMem-s012.pth",
        size=None,
        md5=None,
        sha256=None,
        description="XMem trained with BL30K (s012); Track-Anything's choice",
        provenance=_XMEM_PROVENANCE,
    ),
}


class WeightsError(RuntimeError):
    """A download or verification failed (the message says what to do)."""


class ChecksumError(WeightsError):
    """A file's size or checksum differs from the registry."""


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` checked; ``checked`` is empty when the registry knows nothing."""

    path: Path
    size: int
    checked: tuple[str, ...]

    @property
    def fully_verified(self) -> bool:
        return any(c in self.checked for c in ("md5", "sha256"))


def get_spec(name: str) -> WeightSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown checkpoint {name!r}; known: {', '.join(REGISTRY)}") from None


def file_digests(path: Path, algorithms: tuple[str, ...], chunk: int = 1 << 22) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, in one pass."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            for h in hashers.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashers.items()}


def verify(path: Path, name: str) -> VerifyReport:
    """Check ``path`` against the registry entry ``name`` (size, then md5/sha256 when known).

    Raises :class:`ChecksumError` on a mismatch and :class:`WeightsError` if the file is missing.
    """
    spec = get_spec(name)
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    size = path.stat().st_size
    checked: list[str] = []
    if spec.size is not None:
        if size != spec.size:
            raise ChecksumError(f"{path.name}: size {size} bytes, expected {spec.size}")
        checked.append("size")
    expected = {a: v for a, v in (("md5", spec.md5), ("sha256", spec.sha256)) if v}
    if expected:
        actual = file_digests(path, tuple(expected))
        for algo, want in expected.items():
            if actual[algo] != want.lower():
                raise ChecksumError(f"{path.name}: {algo} {actual[algo]}, expected {want}")
            checked.append(algo)
    return VerifyReport(path=path, size=size, checked=tuple(checked))


# --------------------------------------------------------------------------- download


def _progress_sink(
    progress: bool | ProgressFn, label: str
) -> tuple[ProgressFn, Callable[[], None]]:
    """(update(done, total), close()) for ``progress``: a callable, tqdm on stderr, or nothing."""
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return (lambda done, total: None), lambda: None
    try:
        from tqdm import tqdm
    except ImportError:  # plain stderr lines, at most one per second
        last = [0.0]

        def line(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= 1.0 or (total is not None and done >= total):
                last[0] = now
                pct = f" {100 * done / total:5.1f}%" if total else ""
                print(f"{label}: {done / 1e6:8.1f} MB{pct}", file=sys.stderr)

        return line, lambda: None
    bar = tqdm(desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def update(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return update, bar.close


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _fetch_once(
    url: str, part: Path, expected_size: int | None, update: ProgressFn, timeout: float
) -> None:
    """One HTTP request appending to ``part`` from its current length. Raises on short reads."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tam-label-studio-backend"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: treat the part as complete
            log.info("server says %s is already complete (%d bytes)", part.name, offset)
            return
        raise WeightsError(f"HTTP {exc.code} for {url}: {exc.reason}") from exc
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise WeightsError(f"server answered an unexpected range for {url}")
            mode = "ab"
        else:
            if offset:
                log.info("server ignored the Range request; restarting %s from 0", part.name)
            offset, mode = 0, "wb"
        total = offset + length if length is not None else None
        if expected_size is not None and total is not None and total != expected_size:
            raise ChecksumError(
                f"{url} is {total} bytes, the registry expects {expected_size}; wrong URL?"
            )
        done = offset
        update(done, total or expected_size)
        with open(part, mode) as fh:
            while block := response.read(1 << 20):
                fh.write(block)
                done += len(block)
                update(done, total or expected_size)
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)


def download(
    name: str,
    dest_dir: Path,
    *,
    url: str | None = None,
    progress: bool | ProgressFn = True,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """Download checkpoint ``name`` into ``dest_dir`` and return the verified final path.

    An existing verified file is returned as is. Interrupted transfers are resumed (HTTP Range)
    up to ``retries`` times, and the ``.part`` file is kept so a later call resumes too. A size
    or checksum mismatch deletes the partial file and raises :class:`ChecksumError`.
    """
    spec = get_spec(name)
    dest_dir = Path(dest_dir)
    dest = dest_dir / spec.filename
    if dest.exists():
        try:
            verify(dest, name)
            log.info("%s already present and verified", dest)
            return dest
        except ChecksumError as exc:
            log.warning("existing %s failed verification (%s); downloading again", dest, exc)
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if spec.size is not None and part.exists() and part.stat().st_size > spec.size:
        part.unlink()
    source = url or spec.url
    update, close = _progress_sink(progress, spec.filename)
    try:
        for attempt in range(retries + 1):
            try:
                _fetch_once(source, part, spec.size, update, timeout)
                break
            except ChecksumError:
                part.unlink(missing_ok=True)
                raise
            except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
                if attempt == retries:
                    raise WeightsError(
                        f"download of {source} interrupted ({exc}); run the same command again "
                        f"to resume from {part}"
                    ) from exc
                log.warning("download interrupted (%s); resuming (retry %d)", exc, attempt + 1)
                time.sleep(backoff_s * (attempt + 1))
    finally:
        close()
    try:
        verify(part, name)
    except ChecksumError as exc:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{exc}; the partial download was deleted") from exc
    os.replace(part, dest)
    if not spec.has_checksum:
        log.warning("%s has no published checksum; only its download completed", dest.name)
    return dest


# --------------------------------------------------------------------------- CLI


def default_model_dir() -> Path:
    """``$MODEL_DIR``, else ``./model_dir``."""
    return Path(os.environ.get("MODEL_DIR") or "model_dir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``list``/``download``/``verify`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="weights_command", required=True)
    sub.add_parser("list", help="list the known checkpoints")
    dl = sub.add_parser("download", help="download and verify a checkpoint")
    dl.add_argument("name", choices=sorted(REGISTRY))
    dl.add_argument("--dir", type=Path, default=None, help="target folder (default $MODEL_DIR)")
    dl.add_argument("--url", default=None, help="download from this URL (a mirror) instead")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    ve = sub.add_parser("verify", help="check a file's size and checksum")
    ve.add_argument("file", type=Path)
    ve.add_argument("--name", required=True, choices=sorted(REGISTRY))


def _fmt_size(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 1e6:.1f} MB"


def main(args: argparse.Namespace) -> int:
    """Run a parsed ``weights`` command; returns the process exit code."""
    if args.weights_command == "list":
        model_dir = default_model_dir()
        for spec in REGISTRY.values():
            present = "present" if (model_dir / spec.filename).exists() else "missing"
            checksum = f"sha256 {spec.sha256[:12]}…" if spec.sha256 else "no checksum"
            print(
                f"{spec.name:10s} {spec.filename:22s} {_fmt_size(spec.size):>10s}  {checksum:22s}"
                f" [{present} in {model_dir}]  {spec.description}"
            )
        return 0
    if args.weights_command == "download":
        target = args.dir or default_model_dir()
        try:
            path = download(args.name, target, url=args.url, progress=not args.quiet)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(path)
        return 0
    if args.weights_command == "verify":
        try:
            report = verify(args.file, args.name)
        except WeightsError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        if report.fully_verified:
            print(f"OK: {report.path} ({', '.join(report.checked)} match {args.name})")
        else:
            print(
                f"UNVERIFIED: {report.path} ({report.size} bytes); no checksum is published "
                f"for {args.name}"
            )
        return 0
    raise ValueError(f"unknown weights command {args.weights_command!r}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    _parser = argparse.ArgumentParser(prog="python -m backend.weights")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
