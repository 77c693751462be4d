"""Weights-free engine on the shared DAVIS-2016 val sequences: accuracy and speed.

Protocol ("our protocol", not comparable with published semi-supervised numbers): one positive
click per object on frame 0 at the maximum of the ground-truth mask's distance transform →
``ClassicalSegmenter`` best mask → ``ClassicalTracker`` forward to the last frame. J and F use
``backend.eval.metrics`` when it is present, otherwise a local re-implementation of the DAVIS
definitions (first and last frame skipped, F tolerance ceil(0.008 · diagonal)).

Usage::

    python bench/classical.py                 # all sequences
    python bench/classical.py --seqs dog camel --init gt   # tracker only, from the GT mask
    python bench/classical.py --every 2       # every other sequence (development)
    python bench/classical.py --split validate --init gt   # one of issue 17's halves

Timings: segmentation seconds per click (set_image + predict), propagation frames/s (whole
propagate loop including frame decoding). The machine's cores may be shared; timings are noisy.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.demo import DAVIS_DIR as DAVIS  # noqa: E402
from backend.eval.runner import SPLITS  # noqa: E402
from backend.frames import FolderFrameSource  # noqa: E402
from backend.segmenter.classical import ClassicalSegmenter  # noqa: E402
from backend.tracker.classical import ClassicalTracker  # noqa: E402

# -- metrics (fallback when backend.eval.metrics is missing) --------------------------------


def _jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return m.astype(bool) & ~cv2.erode(m, np.ones((3, 3), np.uint8)).astype(bool)


def _f_measure(pred: np.ndarray, gt: np.ndarray) -> float:
    bound = math.ceil(0.008 * math.hypot(*gt.shape))
    bp, bg = _boundary(pred), _boundary(gt)
    if not bp.any() and not bg.any():
        return 1.0
    if not bp.any() or not bg.any():
        return 0.0
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * bound + 1, 2 * bound + 1))
    gd = cv2.dilate(bg.astype(np.uint8), disk).astype(bool)
    pd = cv2.dilate(bp.astype(np.uint8), disk).astype(bool)
    precision = (bp & gd).sum() / bp.sum()
    recall = (bg & pd).sum() / bg.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def _metric_fns():
    try:
        from backend.eval import metrics

        def jfn(pred: np.ndarray, gt: np.ndarray) -> float:
            return metrics.jaccard(gt, pred)

        def ffn(pred: np.ndarray, gt: np.ndarray) -> float:
            return metrics.f_measure(gt, pred)

        return jfn, ffn, "backend.eval.metrics"
    except (ImportError, AttributeError):
        return _jaccard, _f_measure, "bench-local"


# -- protocol -------------------------------------------------------------------------------


def click_point(gt: np.ndarray) -> tuple[float, float]:
    """The ground-truth mask's distance-transform maximum (x, y)."""
    dt = ndi.distance_transform_edt(np.pad(gt, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return float(x), float(y)


def read_gt(seq: str, i: int) -> np.ndarray:
    path = DAVIS / "Annotations" / "480p" / seq / f"{i:05d}.png"
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127


def run_sequence(seq: str, init: str, jfn, ffn) -> dict:
    frames = FolderFrameSource(DAVIS / "JPEGImages" / "480p" / seq, cache_size=2)
    gt0 = read_gt(seq, 0)
    t0 = time.perf_counter()
    if init == "gt":
        mask0 = gt0
    else:
        seg = ClassicalSegmenter()
        seg.set_image(frames[0])
        x, y = click_point(gt0)
        mask0 = seg.predict(np.array([[x, y]]), np.array([1])).best_mask()
    seg_s = time.perf_counter() - t0
    session = ClassicalTracker().start(frames)
    session.add_mask(0, 1, mask0)
    preds = []
    t0 = time.perf_counter()
    for out in session.propagate(0):
        preds.append(out.masks()[1])
    prop_s = time.perf_counter() - t0
    n = len(preds)
    js, fs = [], []
    for i in range(1, n - 1):  # DAVIS skips the first and last frame
        gt = read_gt(seq, i)
        js.append(jfn(preds[i], gt))
        fs.append(ffn(preds[i], gt))
    return {
        "seq": seq,
        "J0": _jaccard(mask0, gt0),
        "J": float(np.mean(js)),
        "F": float(np.mean(fs)),
        "seg_s": seg_s,
        "fps": (n - 1) / prop_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--seqs", nargs="*", help="sequence names (default: all of val.txt)")
    which.add_argument("--split", choices=sorted(SPLITS), help="one of issue 17's halves")
    ap.add_argument("--every", type=int, default=1, help="take every N-th sequence")
    ap.add_argument("--init", choices=("click", "gt"), default="click")
    args = ap.parse_args()
    if args.split:
        seqs = list(SPLITS[args.split])
    else:
        seqs = args.seqs or (DAVIS / "ImageSets" / "2016" / "val.txt").read_text().split()
    seqs = seqs[:: args.every]
    cv2.setNumThreads(2)
    jfn, ffn, source = _metric_fns()
    print(f"metrics: {source}; init: {init_label(args.init)}; threads: {cv2.getNumThreads()}")
    print(
        f"{'sequence':16s} {'J(f0)':>6s} {'J':>6s} {'F':>6s} {'J&F':>6s} {'seg s':>6s} {'fps':>6s}"
    )
    rows = []
    for seq in seqs:
        r = run_sequence(seq, args.init, jfn, ffn)
        rows.append(r)
        jf = (r["J"] + r["F"]) / 2
        print(
            f"{seq:16s} {r['J0']:6.3f} {r['J']:6.3f} {r['F']:6.3f} {jf:6.3f} "
            f"{r['seg_s']:6.2f} {r['fps']:6.1f}",
            flush=True,
        )
    j = np.mean([r["J"] for r in rows])
    f = np.mean([r["F"] for r in rows])
    fps = np.mean([r["fps"] for r in rows])
    seg = np.mean([r["seg_s"] for r in rows])
    j0 = np.mean([r["J0"] for r in rows])
    print(f"{'mean':16s} {j0:6.3f} {j:6.3f} {f:6.3f} {(j + f) / 2:6.3f} {seg:6.2f} {fps:6.1f}")


def init_label(init: str) -> str:
    return "GT mask on frame 0" if init == "gt" else "one click at the GT distance-transform max"


if __name__ == "__main__":
    main()
