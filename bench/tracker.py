"""XMem tracker speed and peak memory on CPU.

    python bench/tracker.py                 # short default run (6 frames per row)
    python bench/tracker.py --frames 30     # longer, steadier numbers
    python bench/tracker.py --native-1080p  # also the official way at 1080p (slow)

Each row runs in its own process (so peak RSS is per row) on a synthetic
video streamed frame by frame, with the golden-recipe pseudo-weights from
``../shared/xmem-golden`` (speed does not depend on the weight values).

Rows:

* ``ours``: :class:`XMemTracker` as shipped (internal size 480, BatchNorm
  folded, channels_last, optional bf16 autocast where the CPU has native bf16).
* ``baseline``: the same core run the official way: native resolution,
  BatchNorm layers, NCHW, dense ``V @ A`` readout, image features concatenated
  to every object before the fusion convolutions (``set_reference_mode``).
  It computes what the official code computes, with the same kernels.

s/frame is the median over frames 1..N-1 (frame 0 only encodes the mask);
``min`` is the fastest of those frames, the better estimate on a machine shared
with other work (ratios use it). ``--repeat R`` runs every row R times,
interleaved, and keeps each row's best run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.frames import LazyFrameSource  # noqa: E402
from backend.tracker.xmem.checkpoint import network_from_state_dict  # noqa: E402
from backend.tracker.xmem.tracker import XMemTracker  # noqa: E402

RESOLUTIONS = {"480p": (480, 854), "1080p": (1080, 1920)}
OFFICIAL_480P_S_PER_FRAME = 1.2  # shared/docs: official code, 1 object, another (AVX-512) CPU


def has_native_bf16() -> bool:
    """True when the CPU advertises bf16 instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def synthetic_video(h: int, w: int, n: int, objects: int) -> tuple[LazyFrameSource, list]:
    """A textured background with moving ellipses, decoded lazily; plus frame-0 masks."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    background = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    colours = [(230, 60, 40), (40, 200, 90)]

    def centres(t: int) -> list[tuple[int, int]]:
        return [
            (int(w * (0.3 + 0.01 * t)), int(h * 0.45)),
            (int(w * (0.7 - 0.01 * t)), int(h * 0.6)),
        ][:objects]

    axes = (w // 10, h // 7)

    def load(t: int) -> np.ndarray:
        frame = np.roll(background, (t % 7, 2 * t), axis=(0, 1)).copy()
        for c, colour in zip(centres(t), colours, strict=False):
            cv2.ellipse(frame, c, axes, 0, 0, 360, colour, -1)
        return frame

    masks = []
    for c in centres(0):
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, c, axes, 0, 0, 360, 1, -1)
        masks.append(m.astype(bool))
    return LazyFrameSource(n, load, cache_size=2), masks


def worker(args: argparse.Namespace) -> dict:
    """Run one configuration in this process and return its measurements."""
    torch.set_num_threads(args.threads)
    golden = Path(args.golden)
    spec = importlib.util.spec_from_file_location("mw", golden / "make_weights.py")
    mw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mw)
    net = network_from_state_dict(mw.as_torch_state_dict(str(golden / "xmem_state_dict_keys.tsv")))
    official = args.mode == "baseline"
    if official:
        net.set_reference_mode(True)
    else:
        net.fold_batchnorm()
    tracker = XMemTracker(
        net,
        internal_size=None if official else args.internal_size,
        channels_last=not official,
        autocast_dtype=torch.bfloat16 if args.precision == "bf16" else None,
        dense_readout=official,
    )
    h, w = RESOLUTIONS[args.res]
    source, masks = synthetic_video(h, w, args.frames, args.objects)
    session = tracker.start(source)
    for i, m in enumerate(masks):
        session.add_mask(0, i + 1, m)
    times = []
    t0 = time.perf_counter()
    for _ in session.propagate(0):
        t1 = time.perf_counter()
        times.append(t1 - t0)
        t0 = t1
    return {
        "s_per_frame": statistics.median(times[1:]),
        "min_s": min(times[1:]),
        "frame0_s": times[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_row(args: argparse.Namespace, **row) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--frames", str(args.frames)]
    cmd += ["--threads", str(args.threads), "--golden", str(args.golden)]
    cmd += ["--internal-size", str(args.internal_size)]
    for k, v in row.items():
        cmd += [f"--{k}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return row | json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--internal-size", type=int, default=480)
    parser.add_argument("--golden", default=str(REPO / ".." / "shared" / "xmem-golden"))
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (best kept)")
    parser.add_argument("--native-1080p", action="store_true", help="add the official 1080p row")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--res", default="480p", help=argparse.SUPPRESS)
    parser.add_argument("--objects", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and has_native_bf16())
    rows = []
    for objects in (1, 2):
        rows.append(dict(mode="baseline", res="480p", objects=objects, precision="fp32"))
        if args.native_1080p:
            rows.append(dict(mode="baseline", res="1080p", objects=objects, precision="fp32"))
        for res in ("480p", "1080p"):
            for precision in ("fp32", "bf16") if bf16 else ("fp32",):
                rows.append(dict(mode="ours", res=res, objects=objects, precision=precision))
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.frames} frames/row, "
        f"cpu {torch.backends.cpu.get_cpu_capability()}, native bf16: {has_native_bf16()}"
    )
    best: dict[int, dict] = {}
    for _ in range(args.repeat):
        for i, row in enumerate(rows):
            r = run_row(args, **row)
            if i not in best or r["min_s"] < best[i]["min_s"]:
                best[i] = r
    results = [best[i] for i in range(len(rows))]
    header = f"{'mode':9s} {'input':6s} {'obj':>3s} {'prec':5s} {'s/frame':>8s} {'min':>6s}"
    print(header + f" {'frame0':>7s} {'peak RSS':>9s}")
    for r in results:
        print(
            f"{r['mode']:9s} {r['res']:6s} {r['objects']:3d} {r['precision']:5s} "
            f"{r['s_per_frame']:8.2f} {r['min_s']:6.2f} {r['frame0_s']:7.2f} "
            f"{r['peak_rss_mb']:7.0f}MB"
        )

    def find(**kw) -> dict | None:
        return next((r for r in results if all(r[k] == v for k, v in kw.items())), None)

    print()
    for objects in (1, 2):
        base = find(mode="baseline", res="480p", objects=objects)
        ours480 = find(mode="ours", res="480p", objects=objects, precision="fp32")
        ours1080 = find(mode="ours", res="1080p", objects=objects, precision="fp32")
        print(
            f"{objects} obj: speed-up vs official-like baseline at 480p "
            f"{base['min_s'] / ours480['min_s']:.2f}x (goal >= 1.7x); "
            f"1080p/480p cost {ours1080['min_s'] / ours480['min_s']:.2f}x (goal <= 1.3x); "
            f"(official: {OFFICIAL_480P_S_PER_FRAME} s/frame on the AVX-512 reference CPU)"
        )
        native = find(mode="baseline", res="1080p", objects=objects)
        if native:
            print(f"   official-like at native 1080p: {native['min_s']:.2f} s/frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
