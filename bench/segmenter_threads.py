"""Weights-free segmenter latency: candidate cuts one after the other vs side by side.

Frame 0 of the shared DAVIS-2016 val sequences. For each sequence: a first click (set_image
and four candidate cuts) and the NoC protocol's first corrective click (five cuts, refining
the segmenter's own answer), with ``threads=1`` and with the default (OpenCV's thread count),
alternated in one run so both see the same machine. Also checks that both give the same masks.

``--window`` compares instead the corrective click on the whole frame (``zoom_margin=0``)
with the default refinement window (docs/classical-engine.md), both on the default threads,
and prints the corrective click's mean IoU with each (the masks differ by design).

    python bench/segmenter_threads.py [--every 3] [--repeat 3] [--window]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.demo import DAVIS_DIR as DAVIS  # noqa: E402
from backend.eval.clicks import corrective_click, first_frame_clicks  # noqa: E402
from backend.eval.davis import load_sequence, read_ground_truth  # noqa: E402
from backend.frames import read_image  # noqa: E402
from backend.masks import jaccard  # noqa: E402
from backend.pipeline import _clicks_to_arrays  # noqa: E402
from backend.segmenter.classical import ClassicalSegmenter, ClassicalSegmenterConfig  # noqa: E402


def run(
    image: np.ndarray, labels: np.ndarray, config: ClassicalSegmenterConfig
) -> tuple[float, float, list]:
    """Seconds for the first click and for the corrective click, and the masks."""
    seg = ClassicalSegmenter(config)
    prompt = [first_frame_clicks(labels, [1])[1]]
    t0 = time.perf_counter()
    seg.set_image(image)
    first = seg.predict(*_clicks_to_arrays(prompt))
    t1 = time.perf_counter()
    prompt.append(corrective_click(labels == 1, first.best_mask()))
    prior = first.best_mask().astype(np.float32)
    t2 = time.perf_counter()
    second = seg.predict(*_clicks_to_arrays(prompt), mask_prior=prior, prior_is_own=True)
    t3 = time.perf_counter()
    return t1 - t0, t3 - t2, [first.masks, second.masks]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--every", type=int, default=1, help="take every N-th sequence")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--window", action="store_true", help="whole frame vs refinement window")
    args = ap.parse_args()
    names = (DAVIS / "ImageSets" / "2016" / "val.txt").read_text().split()[:: args.every]
    default = cv2.getNumThreads()
    if args.window:
        heads = ("whole", "window")
        configs = (ClassicalSegmenterConfig(zoom_margin=0.0), ClassicalSegmenterConfig())
    else:
        heads = ("1 thread", "default")
        configs = (ClassicalSegmenterConfig(threads=1), ClassicalSegmenterConfig())
    times: list[tuple[list[float], list[float]]] = [([], []), ([], [])]
    ious: list[list[float]] = [[], []]
    same = True
    for name in names:
        seq = load_sequence(DAVIS, name, 1)
        image, labels = read_image(seq.images[0]), read_ground_truth(seq)[0]
        for _ in range(args.repeat):
            masks = []
            for k, config in enumerate(configs):
                click_s, corr_s, found = run(image, labels, config)
                times[k][0].append(click_s)
                times[k][1].append(corr_s)
                ious[k].append(jaccard(labels == 1, found[1][0]))
                masks.append(found)
            same &= all(np.array_equal(a, b) for a, b in zip(*masks, strict=True))
    print(f"{len(names)} sequences × {args.repeat}; default threads = {default}")
    print(f"{'':22s} {heads[0]:>9s} {heads[1]:>9s} {'ratio':>6s}  (median seconds)")
    for i, what in enumerate(("first click", "corrective click")):
        a, b = statistics.median(times[0][i]), statistics.median(times[1][i])
        print(f"{what:22s} {a:9.3f} {b:9.3f} {a / b:6.2f}")
    if args.window:
        print(f"corrective click, mean IoU: {np.mean(ious[0]):.3f} {np.mean(ious[1]):.3f}")
        return 0
    print(f"same masks: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
