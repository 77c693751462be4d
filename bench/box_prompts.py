"""Box prompts on frame 0 of the shared DAVIS-2016 sequences, weights-free segmenter.

Three first prompts side by side, each followed by ``--clicks`` corrective clicks (the NoC
protocol's click: the centre of the largest error; the mask shown is the segmenter's prior):

* ``box``: a tight box around the ground truth alone;
* ``click``: the one-click protocol's click alone (the distance-transform maximum);
* ``box+click``: both sent at once, as a bulk or API request may.

The box stays on the frame for its corrections, as it does in a Label Studio task. Prints
IoU × 100 after the first prompt and after each click, per sequence and per issue-17 half.

Usage::

    python bench/box_prompts.py                   # both halves, 5 corrective clicks
    python bench/box_prompts.py --split tune --clicks 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.demo import DAVIS_DIR as DAVIS  # noqa: E402
from backend.eval.clicks import corrective_click, first_frame_boxes, first_frame_clicks  # noqa: E402
from backend.eval.davis import load_sequence, read_ground_truth  # noqa: E402
from backend.eval.runner import SPLITS  # noqa: E402
from backend.frames import read_image  # noqa: E402
from backend.masks import jaccard  # noqa: E402
from backend.pipeline import _clicks_to_arrays  # noqa: E402
from backend.segmenter.classical import ClassicalSegmenter  # noqa: E402

PROMPTS = ("box", "click", "box+click")


def ious(seg: ClassicalSegmenter, labels: np.ndarray, prompt: str, n_clicks: int) -> list[float]:
    """IoU after the first prompt and after each corrective click (the set image's frame)."""
    gt = labels == 1
    box = first_frame_boxes(labels, [1])[1].as_array() if "box" in prompt else None
    clicks = [first_frame_clicks(labels, [1])[1]] if "click" in prompt else []
    kw = {} if box is None else {"box": box}
    # as backend.pipeline asks: candidates for a single click
    out = seg.predict(*_clicks_to_arrays(clicks), multimask_output=len(clicks) == 1, **kw)
    mask = out.best_mask().astype(bool)
    found = [jaccard(gt, mask)]
    for _ in range(n_clicks):
        click = corrective_click(gt, mask)
        if click is not None:
            clicks.append(click)
            prior = mask.astype(np.float32)  # its own answer, as the session says
            out = seg.predict(
                *_clicks_to_arrays(clicks),
                mask_prior=prior,
                multimask_output=False,
                prior_is_own=True,
                **kw,
            )
            mask = out.best_mask().astype(bool)
        found.append(jaccard(gt, mask))
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--davis", type=Path, default=DAVIS)
    ap.add_argument("--split", choices=("tune", "validate", "both"), default="both")
    ap.add_argument("--clicks", type=int, default=5, help="corrective clicks after the prompt")
    args = ap.parse_args()
    halves = ("tune", "validate") if args.split == "both" else (args.split,)
    seg = ClassicalSegmenter()
    print("IoU ×100 after the prompt, then after each corrective click; " + " | ".join(PROMPTS))
    for half in halves:
        rows = []
        for name in SPLITS[half]:
            seq = load_sequence(args.davis, name, 1)
            labels = read_ground_truth(seq)[0]
            seg.set_image(read_image(seq.images[0]))
            row = [ious(seg, labels, p, args.clicks) for p in PROMPTS]
            rows.append(row)
            cells = (" ".join(f"{100 * j:3.0f}" for j in r) for r in row)
            print(f"{name:16s}", " | ".join(cells), flush=True)
        mean = np.mean(rows, axis=0)
        print(
            f"{half + ' mean':16s}", " | ".join(" ".join(f"{100 * j:.1f}" for j in r) for r in mean)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
