"""SAM 2 engine on a CPU (or a GPU): seconds per frame, peak RSS, and memory on long clips.

No official weights are needed: SAM 2.1 tiny is built from Meta's config with random weights,
saved as an official checkpoint and loaded through the production loader (the cost of a frame
does not depend on the weights' values). Three parts, all through the production pipeline
(``segment_video``: a click on frame 0 → SAM 2's image path → SAM 2 propagation):

* ``speed``: s/frame and peak RSS per input side (``--sides``) on a short synthetic clip;
* ``long``: RSS at frame 1,000 and every 1,000 after, to ``--frames`` (goal: growth ≤ 10 %);
* ``window``: the tracker's state after a run (bytes of the tensors it holds) with the memory
  window (ours) and with every frame's outputs kept (what ``SAM2VideoPredictor`` does), side by
  side; plus what the package's loader would hold for the same frames (computed, not run).

    python bench/sam2_engine.py                                   # speed + window, quick
    python bench/sam2_engine.py --parts long --frames 10000 --sides 64
    python bench/sam2_engine.py --device cuda --models sam2.1_hiera_t sam2.1_hiera_l --sides 1024
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.config import Settings  # noqa: E402
from backend.engine import build_engine  # noqa: E402
from backend.frames import LazyFrameSource  # noqa: E402
from backend.pipeline import segment_video  # noqa: E402
from backend.sam2_engine.model import build_untrained  # noqa: E402
from backend.sam2_engine.tracker import Sam2Tracker  # noqa: E402
from backend.types import Click, ObjectPrompt  # noqa: E402
from bench.long_video import rss_mb, synthetic_frame  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_checkpoint(model: str, folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / f"{model}.pt"
    torch.save({"model": build_untrained(model, image_size=256).state_dict()}, path)
    return path


def engine_for(checkpoint: Path, model: str, side: int, device: str, keep_frames=None):
    settings = Settings(
        sam2_checkpoint=checkpoint, sam2_model=model, sam2_image_size=side, device=device
    )
    engine = build_engine("sam2", settings)
    if keep_frames is not None:
        tracker = engine.tracker
        engine = dataclasses.replace(
            engine,
            tracker=Sam2Tracker(tracker.model, tracker.precision, keep_frames=keep_frames),
        )
    return engine


def tensor_bytes(obj) -> int:
    """Bytes of every tensor reachable through dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def tracker_state(engine, frames: int, width: int, height: int) -> tuple[int, float]:
    """(bytes held by the tracker's per-object memories after ``frames`` frames, s/frame)."""
    source = LazyFrameSource(frames, lambda i: synthetic_frame(i, width, height), cache_size=4)
    session = engine.tracker.start(source)
    mask = np.zeros((height, width), bool)
    mask[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = True
    session.add_mask(0, 1, mask)
    t0 = time.perf_counter()
    for _ in session.propagate(0):
        pass
    seconds = (time.perf_counter() - t0) / frames
    held = sum(tensor_bytes(m.outputs) for m in session.memories.values())
    return held, seconds


def run(engine, frames: int, width: int, height: int, marks_every: int = 0):
    source = LazyFrameSource(frames, lambda i: synthetic_frame(i, width, height), cache_size=4)
    obj = ObjectPrompt(1, "Object 1", clicks={0: [Click(width * 0.5, height * 0.7)]})
    marks: dict[int, float] = {}
    t0 = time.perf_counter()
    for done, _ in enumerate(segment_video(engine, source, [obj]), start=1):
        if marks_every and (done == 1 or done % marks_every == 0 or done == frames):
            marks[done] = rss_mb()
            print(
                f"  frame {done:6d}  RSS {marks[done]:8.1f} MiB  "
                f"{done / (time.perf_counter() - t0):6.2f} frames/s",
                flush=True,
            )
    return (time.perf_counter() - t0) / frames, marks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["speed", "window"],
                    choices=["speed", "long", "window"])  # fmt: skip
    ap.add_argument("--models", nargs="+", default=["sam2.1_hiera_t"])
    ap.add_argument("--sides", nargs="+", type=int, default=[256, 512],
                    help="SAM2_IMAGE_SIZE values (1024 = the released setting)")  # fmt: skip
    ap.add_argument("--frames", type=int, default=None, help="frames per run")
    ap.add_argument("--size", default="854x480", help="WxH of the synthetic frames")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"device={args.device} torch threads={torch.get_num_threads()} frames {width}x{height}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            ckpt = random_checkpoint(model, Path(tmp))
            for side in args.sides:
                if "speed" in args.parts:
                    n = args.frames or 20
                    engine = engine_for(ckpt, model, side, args.device)
                    run(engine, 2, width, height)  # warm-up
                    s_per_frame, _ = run(engine, n, width, height)
                    print(
                        f"speed  {model} side={side}: {s_per_frame:.3f} s/frame "
                        f"({1 / s_per_frame:.2f} frames/s) over {n} frames, "
                        f"peak RSS {peak_rss_mb():.0f} MiB",
                        flush=True,
                    )
                if "window" in args.parts:
                    n = args.frames or 300
                    print(f"window {model} side={side}, {n} frames: tracker state after the run")
                    for label, keep in (("window (ours)", None), ("keep every frame", 10**9)):
                        engine = engine_for(ckpt, model, side, args.device, keep_frames=keep)
                        held, s_frame = tracker_state(engine, n, width, height)
                        print(f"  {label:18s} {held / 2**20:9.2f} MiB  ({s_frame:.3f} s/frame)")
                    images = n * 3 * side * side * 4
                    print(f"  the package's init_state would also hold {images / 2**20:9.1f} MiB "
                          f"of frames ({n} × 3×{side}×{side} float32; computed)")  # fmt: skip
                if "long" in args.parts:
                    n = args.frames or 10_000
                    engine = engine_for(ckpt, model, side, args.device)
                    print(f"long   {model} side={side}, {n} frames")
                    s_per_frame, marks = run(engine, n, width, height, marks_every=1000)
                    base = marks.get(1000, marks[min(marks)])
                    end = marks[max(marks)]
                    print(
                        f"  RSS at frame 1000: {base:.1f} MiB, at frame {max(marks)}: "
                        f"{end:.1f} MiB, growth ratio {end / base:.3f} (goal ≤ 1.10); "
                        f"{s_per_frame:.3f} s/frame"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
