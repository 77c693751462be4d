"""Streaming and memory: propagate through ≥ 10,000 synthetic frames and watch RSS.

Frames are generated on demand (a textured background with a moving ellipse), so the
benchmark measures what the pipeline and tracker themselves keep: nothing proportional to the
video may accumulate. Prints RSS at frame 1,000 and at the end, and their ratio (goal ≤ 1.10).

    python bench/long_video.py                       # 10,000 frames, 320×180, classical engine
    python bench/long_video.py --frames 2000 --size 854x480
    python bench/long_video.py --keep-results        # also keep every frame's region, as a job does
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.engine import build_engine  # noqa: E402
from backend.frames import LazyFrameSource  # noqa: E402
from backend.ls.labelconfig import parse_label_config  # noqa: E402
from backend.ls.results import compact_region, frame_regions  # noqa: E402
from backend.pipeline import segment_video  # noqa: E402
from backend.types import Click, ObjectPrompt  # noqa: E402

CONFIG = (Path(__file__).resolve().parents[1] / "docs" / "labeling-config.xml").read_text()


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def synthetic_frame(i: int, width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    bg = (
        (np.sin(xx / 7.0 + i * 0.01) * 40 + np.cos(yy / 9.0) * 40 + 110)
        .clip(0, 255)
        .astype(np.uint8)
    )
    img = np.dstack([bg, np.roll(bg, 5, axis=1), np.roll(bg, 9, axis=0)])
    cx = int(width * (0.5 + 0.3 * np.sin(i / 50.0)))
    cy = int(height * (0.5 + 0.2 * np.cos(i / 70.0)))
    cv2.ellipse(img, (cx, cy), (width // 10, height // 8), (i % 180), 0, 360, (220, 40, 40), -1)
    return img


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--size", default="320x180", help="WxH of the synthetic frames")
    ap.add_argument("--engine", default="classical")
    ap.add_argument("--keep-results", action="store_true")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    engine = build_engine(args.engine)
    schema = parse_label_config(CONFIG)
    frames = LazyFrameSource(args.frames, lambda i: synthetic_frame(i, width, height), cache_size=8)
    obj = ObjectPrompt(1, "Object 1", clicks={0: [Click(width * 0.5, height * 0.7)]})
    kept: list[dict] = []
    marks: dict[int, float] = {}
    t0 = time.perf_counter()
    for done, fp in enumerate(segment_video(engine, frames, [obj]), start=1):
        if args.keep_results:
            kept.extend(compact_region(r) for r in frame_regions(fp, {1: "Object 1"}, schema))
        if done in (1, 1000) or done % 2000 == 0 or done == args.frames:
            marks[done] = rss_mb()
            print(
                f"frame {done:6d}  RSS {marks[done]:8.1f} MiB  "
                f"{done / (time.perf_counter() - t0):6.1f} frames/s",
                flush=True,
            )
    base = marks.get(1000, marks[min(marks)])
    end = marks[max(marks)]
    print(
        f"\nengine={engine.name} frames={args.frames} size={width}x{height} "
        f"keep_results={args.keep_results}"
    )
    print(
        f"RSS at frame 1000: {base:.1f} MiB, at the end: {end:.1f} MiB, "
        f"growth ratio {end / base:.3f} (goal ≤ 1.10)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
