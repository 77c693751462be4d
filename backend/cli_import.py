"""``python -m backend import-video``: videos → JPEG frames → Label Studio frame tasks.

For every video (or folder of frames) the kept frames are written as JPEGs to
``<document root>/<prefix>/<video name>/<source index>.jpg`` and grouped into tasks of at
most ``--chunk-size`` frames::

    {"data": {"frames": ["/data/local-files/?d=<prefix>/clip1/00000.jpg", ...],
              "video": "clip1.mp4", "fps": 25.0, "frame_offset": 0}}

``frame_offset`` is the source index of the chunk's first frame; ``export`` merges the chunks
of one ``video`` back into one sequence in that order.

Serving the frames: by default Label Studio serves them from its local-files document root
(``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``, the same folder on both sides) and the command
adds a Local Storage connection for each video folder. With ``--upload`` the JPEGs are sent
through Label Studio's upload API instead (URLs ``/data/upload/...``), so no shared folder is
needed. ``--dry-run`` / ``--out-json`` writes the tasks JSON without touching Label Studio.

The labeling config for ``--create-project`` is :data:`LABEL_CONFIG_TEMPLATE`, a module
constant rather than a read of ``docs/labeling-config.xml``: the package then works when
installed without the repository (tests keep the two in sync).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import cv2

from backend.config import ConfigError, Settings
from backend.frames import MediaError
from backend.video import Frame, Sampling, iter_frames, parse_resize, probe

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 300  # LS's UI handled 300 frames of 854x480 per task
DEFAULT_LABELS = ("Object 1", "Object 2", "Object 3")
_COLOURS = ("#FF3B30", "#0A84FF", "#FFD60A", "#30D158", "#BF5AF2", "#FF9F0A", "#64D2FF", "#FF375F")
LABEL_CONFIG_TEMPLATE = """<View>
  <Image name="image" valueList="$frames" zoomControl="true" rotateControl="false"/>
  <Header value="Masks (one label per object): the suggestions land here; pick one only to paint by hand" size="5"/>
  <BrushLabels name="brush" toName="image">
{brush}
  </BrushLabels>
  <Header value="Clicks: turn on Auto-Annotation, pick the smart keypoint tool and a label here, click the object (Alt+click = not the object)" size="5"/>
  <KeyPointLabels name="kp" toName="image" smart="true">
{keypoints}
  </KeyPointLabels>
</View>"""  # the same rows as docs/labeling-config.xml


class ImportFailed(RuntimeError):
    """Importing failed; the message says why (printed without a traceback)."""


def label_config(labels: Sequence[str] = DEFAULT_LABELS) -> str:
    """Our labeling config (docs/labeling-config.xml without comments) for ``labels``."""
    if not labels:
        raise ValueError("at least one label is needed")
    brush, kps = [], []
    for k, lab in enumerate(labels):
        colour = _COLOURS[k % len(_COLOURS)]
        brush.append(f'    <Label value={quoteattr(lab)} background="{colour}"/>')
        kps.append(f'    <Label value={quoteattr(lab)} smart="true" background="{colour}"/>')
    return LABEL_CONFIG_TEMPLATE.format(brush="\n".join(brush), keypoints="\n".join(kps))


def safe_name(text: str) -> str:
    """A folder name from a video name: letters, digits, ``._-`` only."""
    stem = Path(text).stem if Path(text).suffix else Path(text).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "video"


def local_files_url(rel: str) -> str:
    return f"/data/local-files/?d={rel}"


# --------------------------------------------------------------------------- extraction


@dataclass(frozen=True)
class ExtractedVideo:
    """Frames of one source written to ``folder`` (paths in order)."""

    source: Path
    name: str  # the "video" value of its tasks
    folder: Path
    files: list[Path]
    source_indices: list[int]
    fps: float  # effective fps of the kept frames


def extract(
    source: Path, folder: Path, sampling: Sampling, *, jpeg_quality: int, progress=None
) -> ExtractedVideo:
    """Write the kept frames of ``source`` as ``folder/<source index>.jpg``."""
    info = probe(source)
    folder.mkdir(parents=True, exist_ok=True)
    files, indices = [], []
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    frame: Frame
    for frame in iter_frames(source, sampling):
        path = folder / f"{frame.source_index:05d}.jpg"
        ok = cv2.imwrite(str(path), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise ImportFailed(f"cannot write {path}")
        files.append(path)
        indices.append(frame.source_index)
        if progress:
            progress(1)
    if not files:
        raise MediaError(f"{source.name}: no frames to import")
    fps = sampling.effective_fps(info.fps)
    return ExtractedVideo(source, info.name, folder, files, indices, round(fps, 3))


def chunk_tasks(
    urls: Sequence[str],
    source_indices: Sequence[int],
    *,
    video: str,
    fps: float,
    chunk_size: int,
    frames_key: str = "frames",
) -> list[dict[str, Any]]:
    """Tasks of at most ``chunk_size`` frames (``0``: one task) for one video."""
    if len(urls) != len(source_indices):
        raise ValueError("urls and source_indices differ in length")
    size = chunk_size if chunk_size > 0 else max(1, len(urls))
    tasks = []
    for start in range(0, len(urls), size):
        tasks.append(
            {
                "data": {
                    frames_key: list(urls[start : start + size]),
                    "video": video,
                    "fps": fps,
                    "frame_offset": int(source_indices[start]),
                }
            }
        )
    return tasks


# --------------------------------------------------------------------------- Label Studio


class LabelStudioImporter:
    """The Label Studio side of the import: project, storage, uploads, tasks (thin)."""

    def __init__(self, connection):
        self.connection = connection
        self.client = connection.client

    def create_project(self, title: str, config: str) -> int:
        project = self.client.projects.create(title=title, label_config=config)
        log.info("created project %s (%r)", project.id, title)
        return int(project.id)

    def frames_key(self, project_id: int) -> str:
        from backend.ls.labelconfig import LabelConfigError, parse_label_config

        project = self.client.projects.get(id=project_id)
        try:
            return parse_label_config(project.label_config or "").frames_key
        except LabelConfigError as exc:
            raise ImportFailed(f"project {project_id}: {exc}") from None

    def ensure_local_storage(self, project_id: int, folder: Path) -> None:
        """A Local Storage connection covering ``folder`` (reused if one exists)."""
        folder = folder.resolve()
        for st in self.client.import_storage.local.list(project=project_id):
            path = Path(getattr(st, "path", "") or "")
            if path and (folder == path.resolve() or path.resolve() in folder.parents):
                return
        self.client.import_storage.local.create(
            project=project_id,
            path=str(folder),
            title=f"frames {folder.name}",
            use_blob_urls=False,
            recursive_scan=False,
        )
        log.info("added Local Storage %s to project %s", folder, project_id)

    def upload(
        self, project_id: int, files: Sequence[Path], prefix: str, batch: int = 50, progress=None
    ) -> list[str]:
        """Upload files through LS's import API without creating tasks; returns their URLs."""
        import requests

        urls: list[str] = []
        base = self.connection.url
        for start in range(0, len(files), batch):
            part = files[start : start + batch]
            names = [f"{prefix}_{p.name}" for p in part]
            payload = {
                f"file{k}": (name, p.read_bytes(), "image/jpeg")
                for k, (name, p) in enumerate(zip(names, part, strict=True))
            }
            resp = requests.post(
                f"{base}/api/projects/{project_id}/import",
                params={"commit_to_project": "false"},
                files=payload,
                headers=self.connection.auth_header(),
                timeout=300,
            )
            if resp.status_code != 201:
                raise ImportFailed(
                    f"upload to project {project_id} answered {resp.status_code}: {resp.text[:300]}"
                )
            ids = resp.json().get("file_upload_ids") or []
            by_name: dict[str, str] = {}
            for fid in ids:
                r = requests.get(
                    f"{base}/api/import/file-upload/{fid}",
                    headers=self.connection.auth_header(),
                    timeout=60,
                )
                r.raise_for_status()
                stored = str(r.json()["file"]).lstrip("/")  # upload/<project>/<uuid>-<name>
                original = stored.rsplit("/", 1)[-1].split("-", 1)[-1]
                by_name[original] = "/data/" + stored
            missing = [n for n in names if n not in by_name]
            if missing:
                raise ImportFailed(
                    f"Label Studio did not store {missing[0]} (and {len(missing) - 1} more)"
                )
            urls += [by_name[n] for n in names]
            if progress:
                progress(len(part))
        return urls

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        res = self.client.projects.import_tasks(id=project_id, request=tasks, return_task_ids=True)
        ids = getattr(res, "task_ids", None) or []
        return [int(i) for i in ids]


# --------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "videos",
        nargs="+",
        metavar="VIDEO",
        help="video files (mp4/avi/webm/...) or folders of frames",
    )
    g = parser.add_argument_group("frames")
    g.add_argument("--stride", type=int, default=1, help="keep every N-th frame (default 1)")
    g.add_argument("--fps", type=float, help="keep frames at about this rate (overrides stride)")
    g.add_argument("--max-frames", type=int, metavar="N", help="at most N frames per video")
    g.add_argument(
        "--resize",
        metavar="SHORT|WxH",
        help="shorter side in pixels (never upscales), or exact WxH",
    )
    g.add_argument("--jpeg-quality", type=int, default=90, help="1-100 (default 90)")
    g.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK,
        metavar="N",
        help=f"frames per task (default {DEFAULT_CHUNK}; 0 = one task per video)",
    )
    p = parser.add_argument_group("placement")
    p.add_argument(
        "--document-root",
        type=Path,
        help="LS local-files document root (default: $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)",
    )
    p.add_argument(
        "--prefix",
        default="videos",
        help="folder under the document root for the frames (default 'videos')",
    )
    p.add_argument(
        "--upload",
        action="store_true",
        help="upload the frames through LS's import API instead of local files",
    )
    ls = parser.add_argument_group("Label Studio (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)")
    ls.add_argument("--project", type=int, metavar="ID", help="add the tasks to this project")
    ls.add_argument(
        "--create-project", metavar="TITLE", help="create a project with our labeling config"
    )
    ls.add_argument(
        "--labels",
        default=",".join(DEFAULT_LABELS),
        help="comma-separated labels for --create-project (one per object)",
    )
    ls.add_argument(
        "--dry-run",
        action="store_true",
        help="extract frames and write the tasks JSON only (no Label Studio)",
    )
    ls.add_argument("--out-json", type=Path, metavar="FILE", help="also write the tasks JSON here")


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _check_args(args: argparse.Namespace) -> str | None:
    if args.stride < 1:
        return "--stride must be >= 1"
    if args.fps is not None and args.fps <= 0:
        return "--fps must be > 0"
    if args.max_frames is not None and args.max_frames < 1:
        return "--max-frames must be >= 1"
    if not 1 <= args.jpeg_quality <= 100:
        return "--jpeg-quality must be in 1..100"
    if args.chunk_size < 0:
        return "--chunk-size must be >= 0"
    if args.dry_run and args.upload:
        return "--upload needs Label Studio; it cannot be combined with --dry-run"
    if args.dry_run and not args.out_json:
        return "--dry-run needs --out-json FILE"
    if not args.dry_run and args.project is None and not args.create_project:
        return "give --project ID or --create-project TITLE (or --dry-run --out-json FILE)"
    if args.project is not None and args.create_project:
        return "give either --project or --create-project, not both"
    for v in args.videos:
        if not Path(v).exists():
            return f"{v}: no such file or folder"
    return None


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    problem = _check_args(args)
    if problem:
        return _fail(problem)
    try:
        settings = Settings.from_env()
        sampling = Sampling(
            stride=args.stride,
            fps=args.fps,
            max_frames=args.max_frames,
            resize=parse_resize(args.resize) if args.resize else None,
        )
    except (ConfigError, ValueError) as exc:
        return _fail(str(exc))

    root: Path | None = args.document_root or settings.local_files_root
    tmp: tempfile.TemporaryDirectory | None = None
    if args.upload and root is None:
        tmp = tempfile.TemporaryDirectory(prefix="tam-import-")
        root = Path(tmp.name)
    if root is None:
        return _fail(
            "where should the frames go? set --document-root or "
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (the folder Label Studio "
            "serves local files from), or use --upload"
        )
    root = root.expanduser().resolve()

    importer: LabelStudioImporter | None = None
    project_id: int | None = args.project
    frames_key = "frames"
    try:
        if not args.dry_run:
            from backend.ls.client import LabelStudioAuthError, LabelStudioConnection

            conn = LabelStudioConnection(settings)
            if not conn.configured:
                return _fail(
                    "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set "
                    "(or use --dry-run --out-json FILE)"
                )
            try:
                importer = LabelStudioImporter(conn)
                if args.create_project:
                    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
                    project_id = importer.create_project(args.create_project, label_config(labels))
                else:
                    frames_key = importer.frames_key(project_id)
            except LabelStudioAuthError as exc:
                return _fail(str(exc), 1)

        all_tasks: list[dict[str, Any]] = []
        used: set[str] = set()
        for video in args.videos:
            src = Path(video)
            name = base = safe_name(src.name)
            n = 2
            while name in used:
                name, n = f"{base}-{n}", n + 1
            used.add(name)
            folder = root / args.prefix / name if args.prefix else root / name
            total = _expected_frames(src, sampling)
            with tqdm(
                total=total, desc=f"extract {src.name}", unit="frame", file=sys.stderr
            ) as bar:
                ex = extract(
                    src, folder, sampling, jpeg_quality=args.jpeg_quality, progress=bar.update
                )
            if args.upload:
                assert importer is not None and project_id is not None
                with tqdm(
                    total=len(ex.files), desc=f"upload {src.name}", unit="frame", file=sys.stderr
                ) as bar:
                    urls = importer.upload(project_id, ex.files, name, progress=bar.update)
            else:
                urls = [local_files_url(p.relative_to(root).as_posix()) for p in ex.files]
                if importer is not None:
                    assert project_id is not None
                    importer.ensure_local_storage(project_id, folder)
            tasks = chunk_tasks(
                urls,
                ex.source_indices,
                video=ex.name,
                fps=ex.fps,
                chunk_size=args.chunk_size,
                frames_key=frames_key,
            )
            log.info("%s: %d frames → %d task(s) in %s", src.name, len(urls), len(tasks), folder)
            all_tasks += tasks
        if args.out_json:
            args.out_json.parent.mkdir(parents=True, exist_ok=True)
            args.out_json.write_text(json.dumps(all_tasks, indent=1))
            print(f"wrote {len(all_tasks)} task(s) to {args.out_json}")
        if importer is not None:
            assert project_id is not None
            ids = importer.import_tasks(project_id, all_tasks)
            print(
                f"imported {len(all_tasks)} task(s) into project {project_id}"
                + (f": ids {ids[0]}..{ids[-1]}" if ids else "")
            )
            print(json.dumps({"project": project_id, "task_ids": ids}))
    except (MediaError, ValueError) as exc:
        return _fail(str(exc))
    except ImportFailed as exc:
        return _fail(str(exc), 1)
    except Exception as exc:  # SDK / HTTP errors: message, not a traceback
        if type(exc).__module__.startswith(("label_studio_sdk", "requests", "httpx")):
            return _fail(f"Label Studio request failed: {_short(exc)}", 1)
        raise
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


def _expected_frames(src: Path, sampling: Sampling) -> int | None:
    """Kept-frame estimate for the progress bar (None when unknown)."""
    try:
        info = probe(src)
    except MediaError:
        return None
    if info.frame_count <= 0:
        return sampling.max_frames
    n = int(info.frame_count / sampling.step(info.fps) + 0.999)
    return min(n, sampling.max_frames) if sampling.max_frames else n


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 400 else text[:400] + "…"


def tasks_from_json(path: Path) -> list[dict[str, Any]]:
    """Read a tasks JSON written by ``--out-json`` (helper for scripts/tests)."""
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of tasks")
    return data
