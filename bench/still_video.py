"""Weights-free tracker on a still video: how far a mask drifts when nothing moves.

Each shared DAVIS sequence's first frame is repeated ``--frames`` times and tracked from its
ground-truth mask. A tracker that only followed motion would hand the mask back unchanged; ours
re-decides a band around the boundary on every frame it steps, so whatever it gets wrong there
compounds. Exact repeats are not stepped (a duplicated frame brings no new evidence), so they
keep the mask; ``--noise`` adds Gaussian noise of that many grey levels to every copy after
the first, as a still camera's frames have, and shows the drift of the re-decision. The table
gives the mask's IoU with the (unchanged) ground truth on the last frame, its area against the
ground truth's, and how far its centroid moved, in native pixels.

Usage::

    python bench/still_video.py                       # both halves of issue 17's split
    python bench/still_video.py --noise 2                            # a still camera
    python bench/still_video.py --noise 2 --split tune --set color_weight=0   # which term drifts

``--set`` overrides a ``ClassicalTrackerConfig`` field (repeatable) to see which term of the
fused logit moves the mask. Numbers: docs/benchmarks.md (issue 17, ninth and eleventh rounds).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.demo import DAVIS_DIR as DAVIS  # noqa: E402
from backend.eval.davis import load_sequence, read_ground_truth  # noqa: E402
from backend.eval.runner import SPLITS, split_sequences  # noqa: E402
from backend.frames import read_image  # noqa: E402
from backend.masks import jaccard  # noqa: E402
from backend.tracker.classical import ClassicalTracker, ClassicalTrackerConfig  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Drift:
    """The tracked mask on the last still frame against the ground truth."""

    iou: float
    area_ratio: float
    shift_px: float


def still_drift(
    image: np.ndarray,
    mask: np.ndarray,
    frames: int,
    config: ClassicalTrackerConfig,
    noise: float = 0.0,
) -> Drift:
    """Track ``mask`` through ``frames`` copies of ``image`` (every copy after the first with
    Gaussian noise of ``noise`` grey levels, seeded) and compare the last mask with it."""
    rng = np.random.default_rng(0)
    copies = [image] + [
        np.clip(image + rng.normal(0.0, noise, image.shape), 0, 255).astype(np.uint8)
        if noise > 0
        else image
        for _ in range(frames - 1)
    ]
    session = ClassicalTracker(config).start(copies)
    session.add_mask(0, 1, mask)
    last = None
    for tracked in session.propagate(0):
        last = tracked.probs.argmax(0) == 1
    ys, xs = np.nonzero(mask)
    ly, lx = np.nonzero(last) if last.any() else (ys, xs)
    shift = float(np.hypot(ly.mean() - ys.mean(), lx.mean() - xs.mean()))
    return Drift(jaccard(last, mask), float(last.sum()) / float(mask.sum()), shift)


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``key=value`` pairs typed like the matching ``ClassicalTrackerConfig`` defaults."""
    defaults = ClassicalTrackerConfig()
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not hasattr(defaults, key):
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE of ClassicalTrackerConfig")
        kind = type(getattr(defaults, key))
        out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--davis", type=Path, default=DAVIS, help="DAVIS-2016 root")
    ap.add_argument("--split", choices=(*SPLITS, "both"), default="both")
    ap.add_argument("--frames", type=int, default=15, help="copies of the first frame")
    ap.add_argument("--noise", type=float, default=0.0, help="grey levels of noise per copy")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = ap.parse_args()
    if args.frames < 2:
        ap.error("--frames must be at least 2")
    config = ClassicalTrackerConfig(**parse_overrides(args.set))
    halves = list(SPLITS) if args.split == "both" else [args.split]
    print(
        f"still video: frame 0 x {args.frames}, noise {args.noise:g}, tracked from the ground "
        f"truth; {args.set or ''}"
    )
    print(f"{'sequence':16s} {'IoU':>6s} {'area':>6s} {'shift px':>9s}")
    for half in halves:
        rows = []
        for name in split_sequences(half):
            seq = load_sequence(args.davis, name, max_frames=1)
            mask = read_ground_truth(seq)[0] > 0
            image = read_image(seq.images[0])
            drift = still_drift(image, mask, args.frames, config, args.noise)
            rows.append(drift)
            print(f"{name:16s} {drift.iou:6.3f} {drift.area_ratio:6.3f} {drift.shift_px:9.1f}")
        iou, area, shift = np.mean([dataclasses.astuple(r) for r in rows], axis=0)
        print(f"{'mean ' + half:16s} {iou:6.3f} {area:6.3f} {shift:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
