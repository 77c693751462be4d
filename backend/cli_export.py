"""``python -m backend export``: a Label Studio project's masks → DAVIS / COCO / YouTube-VIS.

A thin layer over :mod:`backend.export`: it fetches the project's labeling config and its
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
    parser.add_argument("--format", required=True, choices=FORMATS)
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
    print(json.dumps(summary.as_dict()))
    if summary.sequences == 0:
        print("error: nothing exported (no task with frames)", file=sys.stderr)
        return 1
    return 0
