"""``python -m backend export``: a Label Studio project's masks → DAVIS / COCO / YouTube-VIS, or
a ``<Video>`` project's tracks → per-frame boxes (MOT text, YOLO files).

A thin layer over :mod:`backend.ls.export` and :mod:`backend.ls.export_tracks`: it fetches the project's labeling config and its
tasks (with annotations and predictions) through label-studio-sdk, or reads a tasks JSON
file (``--tasks-json``, e.g. Label Studio's JSON export) without any network access.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from backend.config import ConfigError, Settings
from backend.ls.export import FORMATS, ExportError, export_tasks
from backend.ls.export_tracks import TRACK_FORMATS, export_video_tasks
from backend.ls.labelconfig import LabelConfigError, parse_label_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--project",
        type=int,
        metavar="ID",
        help="Label Studio project (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)",
    )
    src.add_argument(
        "--tasks-json",
        type=Path,
        metavar="FILE",
        help="tasks exported from Label Studio as JSON (offline)",
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=(*FORMATS, *TRACK_FORMATS),
        help="masks of image-sequence projects: davis, coco, ytvis; tracks of <Video> "
        "projects as per-frame boxes: mot, yolo",
    )
    parser.add_argument(
        "--frame-size",
        metavar="WxH",
        help="<Video> projects: the video's size (default: read from each task's video)",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR")
    parser.add_argument(
        "--predictions",
        action="store_true",
        help="use a task's latest prediction when it has no annotation",
    )
    parser.add_argument(
        "--label-config",
        type=Path,
        metavar="XML",
        help="labeling config for --tasks-json (label order = object ids)",
    )


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    for attr in ("model_dump", "dict"):
        fn = getattr(obj, attr, None)
        if fn is not None:
            return fn()
    raise TypeError(f"cannot read {type(obj).__name__} as a task")


def fetch_project(client, project_id: int) -> tuple[str, list[dict[str, Any]]]:
    """``(label_config, tasks with annotations and predictions)`` of a project."""
    project = client.projects.get(id=project_id)
    tasks = [_as_dict(t) for t in client.tasks.list(project=project_id, fields="all")]
    return project.label_config or "", tasks


def _frame_size_reader(settings: Settings):
    """Reads a frame (local file or through LS) to learn its size; None if impossible."""
    from backend.frames import decode_image
    from backend.ls.media import MediaFetcher

    fetcher = MediaFetcher(settings)

    def size(url: str) -> tuple[int, int]:
        img = decode_image(fetcher.fetch(url), name=url)
        return int(img.shape[0]), int(img.shape[1])

    return size


def _video_schema(config: str):
    from backend.ls.video_task import parse_video_config

    try:
        return parse_video_config(config) if config and "<Video" in config else None
    except LabelConfigError:
        return None


def _export_tracks(args: argparse.Namespace, settings: Settings, tasks: list, video) -> int:
    """``<Video>`` projects: tracks as per-frame boxes (MOT or YOLO)."""
    if args.format not in TRACK_FORMATS:
        if video is None:
            return _fail(f"--format {args.format} needs an image-sequence or <Video> project")
        return _export_video_masks(args, settings, tasks, video)
    if video is None and args.frame_size is None:
        return _fail(
            "--format mot/yolo needs a <Video> project (or --label-config and --frame-size)"
        )
    size = _parse_size(args.frame_size) if args.frame_size else None
    if args.frame_size and size is None:
        return _fail(f"--frame-size {args.frame_size!r}: expected WxH, e.g. 854x480")

    files = _video_files(settings) if size is None else None

    def frame_size(task) -> tuple[int, int]:
        if files is None:
            return size
        from backend.ls.video_task import video_url
        from backend.video_ls import LSVideoFrameSource

        with LSVideoFrameSource(files.path(video_url(task, video), task_id=task.get("id")),
                                video.framerate) as src:  # fmt: skip
            return src.width, src.height

    try:
        summary = export_video_tasks(
            tasks,
            args.format,
            args.out,
            labels=video.labels if video is not None else (),
            use_predictions=args.predictions,
            frame_size=frame_size,
        )
    except (ExportError, ValueError) as exc:
        return _fail(str(exc), 1)
    return _report(summary, summary["tasks"], "no task with a tracked box")


def _video_files(settings: Settings):
    from backend.ls.media import MediaFetcher, VideoFiles

    return VideoFiles(MediaFetcher(settings), settings.model_dir / "videos",
                      max_bytes=settings.max_video_bytes, timeout_s=settings.video_timeout_s)  # fmt: skip


def _export_video_masks(args: argparse.Namespace, settings: Settings, tasks: list, video) -> int:
    """``<Video>`` projects keep tracked boxes in Label Studio, not masks: the masks are
    computed again from each task's boxes with the configured engine (the same session as the
    server), then written like an image-sequence project's (one object per label)."""
    from backend.engine import EngineError, build_engine
    from backend.ls import rle
    from backend.ls.export import BrushRegion, ClipSequence, chosen_result, export_sequences
    from backend.ls.video_task import apply_regions, video_regions, video_url
    from backend.session import InteractiveSession, SessionKey, media_fingerprint
    from backend.video_ls import LSVideoFrameSource

    try:
        engine = build_engine(settings.engine, settings)
    except EngineError as exc:
        return _fail(str(exc), 1)
    files, ids = _video_files(settings), {label: k + 1 for k, label in enumerate(video.labels)}
    sequences = []
    try:
        for task in tasks:
            tid = task.get("id")
            result = chosen_result(task, use_predictions=args.predictions) or []
            regions = video_regions(result, video)
            if not regions:
                continue
            path = files.path(video_url(task, video), task_id=tid)
            with LSVideoFrameSource(path, video.framerate) as src:
                key = SessionKey("export", None, tid, media_fingerprint([str(path)]))
                session = InteractiveSession(key, len(src))
                size = (src.width, src.height)
                by_oid = apply_regions(session, regions, video, size, replace_all=True)
                label_of = {oid: session.labels[oid] for oid in by_oid}
                for label in label_of.values():
                    ids.setdefault(label, len(ids) + 1)
                seq = ClipSequence(f"task-{tid}", [f"{i + 1}" for i in range(len(src))],
                                   task_ids=[tid], size=(src.height, src.width))  # fmt: skip
                for fp in session.run(engine, src):
                    for oid, mask in fp.masks.items():
                        if oid in label_of and mask.any():
                            region = BrushRegion(ids[label_of[oid]], bytes(rle.encode(mask)),
                                                 src.height, src.width)  # fmt: skip
                            seq.regions.setdefault(fp.index, []).append(region)
                sequences.append(seq)
        summary = export_sequences(sequences, ids, args.format, args.out)
    except (ExportError, ValueError) as exc:
        return _fail(str(exc), 1)
    return _report(summary.as_dict(), summary.sequences, "no task with a box")


def _report(summary: dict[str, Any], exported: int, why_none: str) -> int:
    """Print the summary (JSON on stdout); exit code 1 when nothing was exported."""
    print(json.dumps(summary))
    if exported == 0:
        print(f"error: nothing exported ({why_none})", file=sys.stderr)
        return 1
    return 0


def _parse_size(text: str) -> tuple[int, int] | None:
    w, _, h = text.lower().partition("x")
    return (int(w), int(h)) if w.isdigit() and h.isdigit() and int(w) and int(h) else None


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        return _fail(str(exc))
    config = ""
    try:
        if args.tasks_json is not None:
            try:
                tasks = json.loads(args.tasks_json.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                return _fail(f"{args.tasks_json}: cannot read tasks JSON ({exc})")
            if not isinstance(tasks, list):
                return _fail(f"{args.tasks_json}: expected a JSON list of tasks")
            if args.label_config is not None:
                config = args.label_config.read_text()
        else:
            from backend.ls.client import LabelStudioAuthError, LabelStudioConnection

            conn = LabelStudioConnection(settings)
            if not conn.configured:
                return _fail(
                    "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set "
                    "(or use --tasks-json FILE)"
                )
            try:
                config, tasks = fetch_project(conn.client, args.project)
            except LabelStudioAuthError as exc:
                return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(str(exc))
    except Exception as exc:
        if type(exc).__module__.startswith(("label_studio_sdk", "httpx", "requests")):
            return _fail(f"Label Studio request failed: {str(exc)[:400]}", 1)
        raise

    video = _video_schema(config)
    if video is not None or args.format in TRACK_FORMATS:
        return _export_tracks(args, settings, tasks, video)
    labels: tuple[str, ...] = ()
    frames_key, brush_name = "frames", None
    if config:
        try:
            schema = parse_label_config(config)
        except LabelConfigError as exc:
            return _fail(str(exc))
        labels, frames_key, brush_name = schema.brush_labels, schema.frames_key, schema.brush_name
    n_frames = sum(len((t.get("data") or {}).get(frames_key) or []) for t in tasks)
    try:
        with tqdm(
            total=n_frames, desc=f"export {args.format}", unit="frame", file=sys.stderr
        ) as bar:
            summary = export_tasks(
                tasks,
                args.format,
                args.out,
                config_labels=labels,
                frames_key=frames_key,
                brush_name=brush_name,
                use_predictions=args.predictions,
                frame_size=_frame_size_reader(settings),
                progress=bar.update,
            )
    except ExportError as exc:
        return _fail(str(exc), 1)
    return _report(summary.as_dict(), summary.sequences, "no task with frames")
