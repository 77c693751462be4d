"""Keyframe compression of box tracks on DAVIS ground truth: keyframes / frames.

Usage: ``python bench/tracks.py [--seqs a,b] [--fractions 0.005,0.01,0.02]``. Each sequence's
ground-truth masks (``Annotations/480p/<seq>/*.png``) become one box per frame; the track is
compressed at each tolerance (a share of the frame diagonal) and replayed the way Label
Studio interpolates it. Prints, per sequence and tolerance, the keyframe count, the ratio
keyframes / frames, the largest error on any frame (pixels, largest edge displacement) and
the time taken.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.demo import DAVIS_DIR as DAVIS  # noqa: E402
from backend.ls.export_tracks import sequence_boxes  # noqa: E402
from backend.ls.tracks import (  # noqa: E402
    FrameBox,
    ObjectTrack,
    TrackFrame,
    TrackOptions,
    VideoInfo,
    box_error,
    mask_box,
    track_result,
)

log = logging.getLogger("bench.tracks")


def davis_track(seq: str) -> tuple[ObjectTrack, VideoInfo]:
    """One track per sequence: the box of its ground-truth mask on every frame."""
    paths = sorted((DAVIS / "Annotations" / "480p" / seq).glob("*.png"))
    frames, size = [], (0, 0)
    for i, p in enumerate(paths):
        mask = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127
        size = mask.shape
        frames.append(TrackFrame(i, mask_box(mask), 1.0))
    h, w = size
    return ObjectTrack(seq, "Object", frames), VideoInfo(w, h, len(paths), len(paths) / 24)


def measure(seq: str, fraction: float) -> tuple[int, int, float, float, float]:
    """(frames, keyframes, max error px, tolerance px, seconds) for one sequence."""
    track, video = davis_track(seq)
    options = TrackOptions(tolerance_fraction=fraction)
    t0 = time.perf_counter()
    result = track_result(track, from_name="box", to_name="video", video=video, options=options)
    elapsed = time.perf_counter() - t0
    assert result is not None
    shown = sequence_boxes(result["value"]["sequence"], video.frames_count)
    worst = max(
        box_error(FrameBox.from_percent(*shown[tf.index + 1], video.width, video.height), tf.box)
        for tf in track.frames
        if tf.box is not None
    )
    keyframes = len(result["value"]["sequence"])
    return video.frames_count, keyframes, worst, options.tolerance(video), elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", default="", help="comma-separated sequences (default: all)")
    ap.add_argument("--fractions", default="0.005,0.01,0.02", help="tolerances, of the diagonal")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = DAVIS / "Annotations" / "480p"
    if not root.is_dir():
        log.error("no DAVIS annotations at %s", root)
        return 1
    seqs = args.seqs.split(",") if args.seqs else sorted(p.name for p in root.iterdir())
    fractions = [float(f) for f in args.fractions.split(",")]
    log.info(
        "%-16s %6s %6s %9s %8s %8s %7s", "sequence", "tol%", "frames", "keyframes", "ratio",
        "max err", "tol px",
    )  # fmt: skip
    totals: dict[float, list[int]] = {f: [0, 0] for f in fractions}
    for seq in seqs:
        for f in fractions:
            n, k, worst, tol, _ = measure(seq, f)
            totals[f][0] += n
            totals[f][1] += k
            log.info("%-16s %6.1f %6d %9d %8.3f %8.2f %7.2f", seq, 100 * f, n, k, k / n, worst, tol)
    for f, (n, k) in totals.items():
        log.info("%-16s %6.1f %6d %9d %8.3f", "all", 100 * f, n, k, k / n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
