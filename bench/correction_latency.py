"""What one correction between two keyframes costs, with and without the session's reach.

A session on one DAVIS sequence gets a click on frame 0 (the object's deepest point) and the
ground-truth mask painted on frame 2n/3, then a corrective click on frame n/3. Timed: that
correction's run (keyframe segmentation and propagation), side by side:

* ``forward``: frames n/3 .. 2n/3 − 1 forward only (``InteractiveSession(reach_back=False)``);
* ``back``: the session's default — the same, spliced with a backward pass from the keyframe
  on 2n/3, and the frames before n/3 spliced with one from the correction
  (docs/architecture.md, *Corrections*).

Usage::

    python bench/correction_latency.py [--sequence dog] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.demo import DAVIS_DIR as DAVIS  # noqa: E402
from backend.engine import build_engine  # noqa: E402
from backend.eval.clicks import corrective_click, first_frame_clicks  # noqa: E402
from backend.eval.davis import load_sequence, read_ground_truth  # noqa: E402
from backend.frames import LazyFrameSource, read_image  # noqa: E402
from backend.session import InteractiveSession, SessionKey  # noqa: E402


def one_correction(engine, frames, truth: list[np.ndarray], reach_back: bool) -> tuple[float, int]:
    """Seconds for the correction's run, and the frames it yielded."""
    n = len(frames)
    session = InteractiveSession(SessionKey("bench", None, 1, "m"), n, reach_back=reach_back)
    session.add_click(1, 0, first_frame_clicks(truth[0].astype(np.uint8), [1])[1], label="o")
    session.add_mask(1, 2 * n // 3, truth[2 * n // 3])
    for _ in session.run(engine, frames):
        pass
    k = n // 3
    click = corrective_click(truth[k], session.shown(1, k))
    if click is None:
        raise SystemExit(f"frame {k} is exact: pick another sequence")
    session.add_click(1, k, click)
    t0 = time.perf_counter()
    count = sum(1 for _ in session.run(engine, frames))
    return time.perf_counter() - t0, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--davis", type=Path, default=DAVIS)
    parser.add_argument("--sequence", default="dog")
    parser.add_argument("--engine", default="classical")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    seq = load_sequence(args.davis, args.sequence, None)
    truth = [g == 1 for g in read_ground_truth(seq)]
    frames = LazyFrameSource(len(seq), lambda i: read_image(seq.images[i]), cache_size=len(seq))
    engine = build_engine(args.engine)
    times: dict[str, list[float]] = {"forward": [], "back": []}
    counts = {}
    for _ in range(args.repeat):  # alternated, so both see the same machine load
        for label in times:
            seconds, counts[label] = one_correction(engine, frames, truth, label == "back")
            times[label].append(seconds)
    n = len(seq)
    print(f"{args.sequence} ({n} frames, {engine.name}): correction on {n // 3} between "
          f"keyframes 0 and {2 * n // 3}, {args.repeat} runs each")  # fmt: skip
    for label, ts in times.items():
        print(f"  {label:8s} median {statistics.median(ts):6.2f} s  (min {min(ts):.2f}, "
              f"max {max(ts):.2f}), {counts[label]} frames yielded")  # fmt: skip
    ratio = statistics.median(times["back"]) / statistics.median(times["forward"])
    print(f"  back / forward: {ratio:.2f}")


if __name__ == "__main__":
    main()
