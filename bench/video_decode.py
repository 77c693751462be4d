"""Video decoding: PyAV against OpenCV, sequential and random access, 480p and 1080p.

Generates clips (a sliding texture with the frame number drawn as a block code) and decodes
them with both libraries in the same run, to RGB arrays as a frame source returns them
(OpenCV: ``read`` then BGR→RGB; PyAV: :func:`backend.video_ls.frame_to_rgb`):

* ``sequential``: every frame in order;
* ``random``: frames at shuffled indices, each reached by a seek. PyAV seeks to the keyframe
  before the frame's timestamp and decodes forward; OpenCV sets ``CAP_PROP_POS_FRAMES``
  (``random-ms``: ``CAP_PROP_POS_MSEC`` to the frame's true time);
* ``LS src``: the same through :class:`backend.video_ls.LSVideoFrameSource` (PyAV) with its
  cache off and the config rate equal to the file's.

Clips: H.264 (mp4, GOP 2 s) at 854×480 and 1920×1080, and a variable frame rate VP8 WebM at
854×480 (irregular gaps of 20-60 ms, millisecond timestamps). ``exact`` counts frames whose
drawn number is the one asked for; ``ts-err`` is the largest gap between OpenCV's
``CAP_PROP_POS_MSEC`` and the true presentation time. Rates are the best of ``--repeat`` runs.

    python bench/video_decode.py                       # 240 frames per clip, best of 3
    python bench/video_decode.py --frames 120 --sizes 854x480 --repeat 1
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.video_ls import LSVideoFrameSource, frame_to_rgb  # noqa: E402

BITS = 12  # frame numbers up to 4095
VFR_GAPS_MS = (20, 40, 33, 60, 25, 47)


def draw_code(img: np.ndarray, number: int) -> None:
    """Draw ``number`` as 2×6 black/white squares near the top-left corner (in place)."""
    side = max(8, img.shape[0] // 12)
    for bit in range(BITS):
        r, c = divmod(bit, BITS // 2)
        value = 255 if (number >> bit) & 1 else 0
        img[side * (r + 1) : side * (r + 2), side * (c + 1) : side * (c + 2)] = value


def read_code(img: np.ndarray) -> int:
    """The number drawn by :func:`draw_code`."""
    side = max(8, img.shape[0] // 12)
    q = side // 4
    number = 0
    for bit in range(BITS):
        r, c = divmod(bit, BITS // 2)
        y, x = side * (r + 1), side * (c + 1)
        if img[y + q : y + side - q, x + q : x + side - q].mean() > 127:
            number |= 1 << bit
    return number


def make_clip(
    path: Path, width: int, height: int, pts: list[int], time_base: Fraction, codec: str, gop: int
) -> None:
    """Encode one frame per timestamp in ``pts`` (units of ``time_base``): a texture sliding
    3 px a frame, numbered with the block code."""
    frames = len(pts)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (height // 8 + 1, (width + 3 * frames) // 8 + 1, 3))
    texture = cv2.resize(noise.astype(np.float32), (width + 3 * frames, height))
    texture = np.clip(128 + 60 * texture, 0, 255).astype(np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(1, 1) / time_base)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "23"}
        else:  # libvpx's default "good" deadline takes a minute for 240 frames at 480p
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "4M"}
        for i, p in enumerate(pts):
            img = np.ascontiguousarray(texture[:, 3 * i : 3 * i + width])
            draw_code(img, i)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = p, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def pyav_sequential(path: Path, times: list[float]) -> tuple[int, float]:
    exact = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for n, frame in enumerate(container.decode(stream)):
            exact += read_code(frame_to_rgb(frame)) == n
    return exact, 0.0


def pyav_random(path: Path, times: list[float], indices: list[int]) -> tuple[int, float]:
    exact = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        for i in indices:
            target = round(times[i] / tb)
            container.seek(target, stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts >= target:
                    exact += read_code(frame_to_rgb(frame)) == i
                    break
    return exact, 0.0


def opencv_sequential(path: Path, times: list[float]) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(path))
    exact, err, n = 0, 0.0, 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        exact += read_code(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) == n
        if n < len(times):
            err = max(err, abs(cap.get(cv2.CAP_PROP_POS_MSEC) - 1000.0 * times[n]))
        n += 1
    cap.release()
    return exact, err


def opencv_random(path: Path, times: list[float], indices: list[int], by_ms: bool = False):
    cap = cv2.VideoCapture(str(path))
    exact, err = 0, 0.0
    for i in indices:
        if by_ms:
            cap.set(cv2.CAP_PROP_POS_MSEC, 1000.0 * times[i])
        else:
            cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, bgr = cap.read()
        if ok:
            exact += read_code(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) == i
            err = max(err, abs(cap.get(cv2.CAP_PROP_POS_MSEC) - 1000.0 * times[i]))
    cap.release()
    return exact, err


def ls_sequential(path: Path, times: list[float], fps: float) -> tuple[int, float]:
    with LSVideoFrameSource(path, fps, cache_size=0) as src:
        return sum(read_code(src[i]) == i for i in range(min(len(src), len(times)))), 0.0


def ls_random(path: Path, times: list[float], indices: list[int], fps: float):
    with LSVideoFrameSource(path, fps, cache_size=0) as src:
        return sum(read_code(src[i]) == i for i in indices), 0.0


def best_rate(fn: Callable[[], tuple[int, float]], count: int, repeat: int):
    """(best frames/s over ``repeat`` runs, exact count, timestamp error) of ``fn``."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        exact, err = fn()
        best = max(best, count / (time.perf_counter() - t0))
    return best, exact, err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--fps", type=int, default=30, help="rate of the H.264 clips")
    ap.add_argument("--random", type=int, default=40, help="random accesses per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    ap.add_argument("--sizes", default="854x480,1920x1080", help="H.264 clip sizes")
    ap.add_argument("--no-vfr", action="store_true", help="skip the VFR VP8 clip")
    args = ap.parse_args()
    n = args.frames
    clips = [
        (f"{s.split('x')[1]}p h264", s, list(range(n)), Fraction(1, args.fps), "libx264", ".mp4")
        for s in args.sizes.split(",")
    ]
    if not args.no_vfr:
        pts = [sum(VFR_GAPS_MS[k % len(VFR_GAPS_MS)] for k in range(i)) for i in range(n)]
        clips.append(("480p vp8 VFR", "854x480", pts, Fraction(1, 1000), "libvpx", ".webm"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, size, pts, tb, codec, suffix in clips:
            width, height = (int(v) for v in size.split("x"))
            clip = Path(tmp) / f"clip{suffix}"
            t0 = time.perf_counter()
            make_clip(clip, width, height, pts, tb, codec, gop=2 * args.fps)
            print(
                f"encoded {label}: {n} frames in {time.perf_counter() - t0:.1f} s", file=sys.stderr
            )
            times = [float(p * tb) for p in pts]
            idx = random.Random(1).sample(range(n), min(args.random, n))
            k = len(idx)
            runs: list[tuple[str, str, Callable[[], tuple[int, float]], int]] = [
                ("OpenCV", "sequential", partial(opencv_sequential, clip, times), n),
                ("PyAV", "sequential", partial(pyav_sequential, clip, times), n),
                ("OpenCV", "random", partial(opencv_random, clip, times, idx), k),
                ("OpenCV", "random-ms", partial(opencv_random, clip, times, idx, True), k),
                ("PyAV", "random", partial(pyav_random, clip, times, idx), k),
            ]
            if codec == "libx264":
                runs += [
                    ("PyAV LS src", "sequential", partial(ls_sequential, clip, times, args.fps), n),
                    ("PyAV LS src", "random", partial(ls_random, clip, times, idx, args.fps), k),
                ]
            for lib, access, fn, count in runs:
                rate, exact, err = best_rate(fn, count, args.repeat)
                ts = f"{err:.1f} ms" if lib == "OpenCV" else ""
                rows.append((label, lib, access, rate, f"{exact}/{count}", ts))
    print(f"\n{'clip':<13} {'library':<12} {'access':<11} {'frames/s':>9}  {'exact':>8}  ts-err")
    for label, lib, access, rate, exact, ts in rows:
        print(f"{label:<13} {lib:<12} {access:<11} {rate:9.1f}  {exact:>8}  {ts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
