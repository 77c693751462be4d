"""``python -m backend segment``: clicks on a video → DAVIS-style masks for every frame, offline.

Same engine and interactive session as the server (:func:`backend.engine.build_engine`,
:class:`backend.session.InteractiveSession`). Writes ``OUT/00000.png`` … (palette index PNGs,
0 = background, k = object k), ``OUT/summary.json`` (per-frame quality per object) and,
with ``--overlay``, a preview video.

Click grammar (one ``--click`` per point; pixel coordinates of the frames as segmented,
i.e. after ``--resize``)::

    CLICK  := X "," Y [ "," SIGN ] [ "@" FRAME ]
    SIGN   := "+" | "-"          (default "+": positive; "-" = negative / background)
    FRAME  := integer >= 0       (default 0: the first frame)

``--label NAME`` starts a new object; the ``--click`` options after it belong to that object.
Clicks before any ``--label`` belong to an object named "object 1". Object ids follow the
order of the labels (1, 2, …).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.config import ENGINES, ConfigError, Settings
from backend.engine import EngineError, build_engine
from backend.frames import MediaError
from backend.masks import masks_to_index, read_index_png, write_index_png
from backend.overlay import FOURCC_BY_SUFFIX, OverlayError, paint, write_video
from backend.session import InteractiveSession, SessionKey, media_fingerprint
from backend.types import Click, ObjectPrompt
from backend.video import open_frames, parse_resize

log = logging.getLogger(__name__)

DEFAULT_LABEL = "object 1"
_CLICK_RE = re.compile(
    r"^\s*(?P<x>[-+]?\d+(?:\.\d*)?)\s*,\s*(?P<y>[-+]?\d+(?:\.\d*)?)"
    r"\s*(?:,\s*(?P<sign>[+-]))?\s*(?:@\s*(?P<frame>\d+))?\s*$"
)


@dataclass(frozen=True)
class ClickSpec:
    """One parsed ``--click``: the frame it is on and the click itself."""

    frame: int
    click: Click


def parse_click(text: str) -> ClickSpec:
    """Parse ``X,Y[,+|-][@FRAME]``; raises ValueError with the expected grammar."""
    m = _CLICK_RE.match(text or "")
    if not m:
        raise ValueError(
            f"bad click {text!r}: expected X,Y[,+|-][@FRAME], e.g. 120,80 or 120,80,-@5"
        )
    x, y = float(m.group("x")), float(m.group("y"))
    if x < 0 or y < 0:
        raise ValueError(f"bad click {text!r}: coordinates must be >= 0")
    return ClickSpec(int(m.group("frame") or 0), Click(x, y, m.group("sign") != "-"))


def _click_type(text: str) -> ClickSpec:
    try:
        return parse_click(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Ordered(argparse.Action):
    """Appends ``(kind, value)`` to ``namespace.prompts`` so --label/--click order is kept."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "prompts", None) or [])
        items.append((self.dest, values))
        namespace.prompts = items


def build_objects(prompts: list[tuple[str, object]]) -> list[ObjectPrompt]:
    """``[("label", name) | ("click", ClickSpec)]`` in command-line order → objects."""
    objects: list[ObjectPrompt] = []
    for kind, value in prompts:
        if kind == "label":
            objects.append(ObjectPrompt(obj_id=len(objects) + 1, label=str(value)))
            continue
        assert isinstance(value, ClickSpec)
        if not objects:
            objects.append(ObjectPrompt(obj_id=1, label=DEFAULT_LABEL))
        objects[-1].clicks.setdefault(value.frame, []).append(value.click)
    return objects


def _session(source, frames, objects) -> InteractiveSession:
    """The same interactive session the server and the evaluation run, for one video."""
    session = InteractiveSession(
        SessionKey("cli", None, None, media_fingerprint([str(source)])), len(frames)
    )
    for obj in objects:
        session.set_object(
            obj.obj_id, obj.label, clicks=obj.clicks, masks=obj.masks, boxes=obj.boxes
        )
    return session


def validate_objects(objects: list[ObjectPrompt], count: int, width: int, height: int) -> None:
    """Raise ValueError when an object has no positive click or a click is off the video."""
    if not objects:
        raise ValueError("no clicks: give at least one --click X,Y")
    for obj in objects:
        if not obj.clicks:
            raise ValueError(f"object {obj.label!r} has no --click")
        for frame, clicks in obj.clicks.items():
            if frame >= count:
                raise ValueError(
                    f"object {obj.label!r}: click on frame {frame}, the video has {count} "
                    f"frames (0..{count - 1})"
                )
            for c in clicks:
                if c.x >= width or c.y >= height:
                    raise ValueError(
                        f"object {obj.label!r}: click {c.x:g},{c.y:g} is outside the "
                        f"{width}x{height} frame"
                    )
        if not any(c.positive for cs in obj.clicks.values() for c in cs):
            raise ValueError(f"object {obj.label!r} needs at least one positive click")


class _Limited:
    """The first ``n`` frames of another source."""

    def __init__(self, inner, n: int):
        self.inner, self.n = inner, min(n, len(inner))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.inner[index]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "click grammar: X,Y[,+|-][@FRAME]  (pixels; '-' = negative; FRAME defaults to 0)\n"
        "each --label starts a new object; the --click options after it belong to it.\n"
        "example: --label car --click 400,260 --click 420,300@30 --label person "
        "--click 100,200 --click 90,150,-"
    )
    parser.add_argument(
        "source",
        metavar="FRAMES_OR_VIDEO",
        help="a video file (mp4/avi/webm/...) or a folder of frames",
    )
    parser.add_argument(
        "--click",
        dest="click",
        type=_click_type,
        action=_Ordered,
        metavar="X,Y[,+|-][@FRAME]",
        help="a click (repeatable)",
    )
    parser.add_argument(
        "--label",
        dest="label",
        action=_Ordered,
        metavar="NAME",
        help="start a new object called NAME",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output folder for the index PNGs and summary.json",
    )
    parser.add_argument("--engine", default="auto", choices=ENGINES)
    parser.add_argument(
        "--overlay",
        type=Path,
        metavar="FILE",
        help=f"also write a preview video ({', '.join(FOURCC_BY_SUFFIX)})",
    )
    parser.add_argument(
        "--resize",
        metavar="SHORT|WxH",
        help="segment downscaled frames (shorter side, or exact WxH)",
    )
    parser.add_argument("--max-frames", type=int, metavar="N", help="only the first N frames")
    parser.add_argument("--fps", type=float, help="preview fps (default: the video's, or 25)")
    parser.set_defaults(prompts=[])


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    objects = build_objects(args.prompts)
    if args.max_frames is not None and args.max_frames < 1:
        return _fail("--max-frames must be >= 1")
    if args.overlay is not None and args.overlay.suffix.lower() not in FOURCC_BY_SUFFIX:
        return _fail(f"--overlay {args.overlay}: use one of {', '.join(FOURCC_BY_SUFFIX)}")
    try:
        resize = parse_resize(args.resize) if args.resize else None
        frames = open_frames(args.source, resize=resize)
    except (MediaError, ValueError) as exc:
        return _fail(str(exc))
    if args.max_frames:
        frames = _Limited(frames, args.max_frames)
    try:
        first = frames[0]
    except MediaError as exc:
        return _fail(str(exc))
    height, width = first.shape[:2]
    try:
        validate_objects(objects, len(frames), width, height)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        engine = build_engine(args.engine, Settings.from_env())
    except (EngineError, ConfigError) as exc:
        return _fail(str(exc))

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    scores: dict[int, list[float | None]] = {o.obj_id: [None] * len(frames) for o in objects}
    areas: dict[int, list[int]] = {o.obj_id: [0] * len(frames) for o in objects}
    log.info("segmenting %d frames of %s with the %s engine", len(frames), args.source, engine.name)
    with tqdm(total=len(frames), desc="segment", unit="frame", file=sys.stderr) as bar:
        try:
            for fp in _session(args.source, frames, objects).run(engine, frames):
                index = masks_to_index(fp.masks, (height, width))
                write_index_png(out / f"{fp.index:05d}.png", index)
                for oid in scores:
                    scores[oid][fp.index] = round(float(fp.scores.get(oid, 0.0)), 4)
                    areas[oid][fp.index] = int((index == oid).sum())
                bar.update(1)
        except (MediaError, ValueError) as exc:
            return _fail(str(exc), 1)

    fps = (
        args.fps
        or getattr(frames, "fps", 0.0)
        or getattr(getattr(frames, "inner", None), "fps", 0.0)
        or 25.0
    )
    summary = {
        "source": str(args.source),
        "frames": len(frames),
        "width": width,
        "height": height,
        "engine": engine.name,
        "model_version": engine.model_version,
        "objects": [
            {
                "id": o.obj_id,
                "label": o.label,
                "clicks": {
                    str(k): [[c.x, c.y, "+" if c.positive else "-"] for c in cs]
                    for k, cs in sorted(o.clicks.items())
                },
                "mean_score": _mean(scores[o.obj_id]),
                "scores": scores[o.obj_id],
                "areas": areas[o.obj_id],
            }
            for o in objects
        ],
        "masks": [f"{i:05d}.png" for i in range(len(frames))],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {len(frames)} masks and summary.json to {out}")
    if args.overlay is not None:
        try:
            n = write_overlay(frames, out, args.overlay, fps=fps)
        except (OverlayError, MediaError) as exc:
            return _fail(str(exc), 1)
        print(f"wrote preview {args.overlay} ({n} frames)")
    return 0


def _mean(values: list[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else 0.0


def write_overlay(frames, mask_dir: Path, path: Path, *, fps: float) -> int:
    """Preview video of ``frames`` painted with the index PNGs in ``mask_dir``."""
    from tqdm import tqdm

    def painted():
        for i in tqdm(range(len(frames)), desc="overlay", unit="frame", file=sys.stderr):
            yield paint(frames[i], read_index_png(mask_dir / f"{i:05d}.png"))

    return write_video(painted(), path, fps=fps)
