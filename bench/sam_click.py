"""Bench: first click on a frame (image encoder + decoder) vs a re-click on the same frame
(cached embedding, decoder only), measured side by side with SamSegmenter.

Default: vit_b architecture with RANDOM weights (no download needed; timing does not depend on
the weight values) on an 854×480 frame. Goal: re-click ≤ 0.1 s on a CPU.

    .venv/bin/python bench/sam_click.py [--model-type vit_b] [--checkpoint FILE] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.segmenter.sam import MODEL_BUILDERS, SamSegmenter  # noqa: E402


def _frame(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[h // 4 : h // 2, w // 3 : w // 2] = (220, 40, 40)
    return img


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-type", default="vit_b", choices=sorted(MODEL_BUILDERS))
    ap.add_argument("--checkpoint", type=Path, default=None, help="real weights (optional)")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=854)
    ap.add_argument("--repeats", type=int, default=5, help="re-clicks to time (median)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.checkpoint is not None:
        seg = SamSegmenter(args.checkpoint, args.model_type, args.device)
        weights = args.checkpoint.name
    else:
        torch.manual_seed(0)
        seg = SamSegmenter.from_model(
            MODEL_BUILDERS[args.model_type](),
            model_id=f"{args.model_type}-random",
            device=args.device,
        )
        weights = "random"
    img = _frame(args.height, args.width)
    key = ("bench", 0)
    h, w = args.height, args.width
    clicks = np.array([[w * 0.42, h * 0.37], [w * 0.1, h * 0.8], [w * 0.45, h * 0.45]])
    labels = np.array([1, 0, 1])

    t0 = time.perf_counter()
    seg.set_image(img, cache_key=key)
    seg.predict(clicks[:1], labels[:1])
    first = time.perf_counter() - t0

    reclicks = []
    for i in range(args.repeats):
        n = 2 + i % 2  # alternate 2 and 3 clicks: follow-up clicks with mask_input reuse
        t0 = time.perf_counter()
        seg.set_image(img, cache_key=key)  # cached: must not run the encoder
        seg.predict(clicks[:n], labels[:n])
        reclicks.append(time.perf_counter() - t0)
    again = statistics.median(reclicks)

    print(
        f"SAM {args.model_type} ({weights}) on {w}x{h}, device {args.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"first click (encode + decode): {first:8.3f} s")
    print(
        f"re-click (cached, decode only): {again:8.3f} s  median of {args.repeats} "
        f"(min {min(reclicks):.3f}, max {max(reclicks):.3f})"
    )
    print(f"ratio first / re-click: {first / again:8.1f}x   goal re-click <= 0.100 s: "
          f"{'met' if again <= 0.1 else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
