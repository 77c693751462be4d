"""Brush RLE speed: backend.rle vs the Label Studio SDK, measured side by side in one run.

Usage: ``python bench/rle.py [--repeats N]``. Masks: one irregular blob (~20 % foreground) and
a fragmented mask (smoothed noise thresholded at 20 %), at 480x854 and 1080x1920. Prints the
median time of each encoder/decoder and the speed ratio SDK / ours; also checks equality.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from label_studio_sdk.converter.brush import decode_rle, mask2rle  # noqa: E402

from backend.ls import rle  # noqa: E402

SIZES = {"480p": (480, 854), "1080p": (1080, 1920)}


def blob_mask(h: int, w: int, seed: int = 0) -> np.ndarray:
    """One irregular blob covering about 20 % of the frame, values 0/255."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radius = np.sqrt(0.2 * h * w / np.pi) * (1 + 0.25 * rng.standard_normal(48).clip(-2, 2))
    pts = np.stack([w / 2 + radius * np.cos(angles), h / 2 + radius * np.sin(angles)], axis=1)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [pts.round().astype(np.int32)], 255)
    return mask


def fragmented_mask(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Many small blobs: smoothed noise thresholded at its 80th percentile, values 0/255."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 4)
    return np.where(noise > np.quantile(noise, 0.8), 255, 0).astype(np.uint8)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    header = (
        f"{'mask':<16}{'runs':>8}{'bytes':>9}{'SDK enc':>10}{'our enc':>10}{'x':>6}"
        f"{'SDK dec':>10}{'our dec':>10}{'x':>6}"
    )
    print(header)
    for size_name, (h, w) in SIZES.items():
        for kind, make in (("blob", blob_mask), ("fragmented", fragmented_mask)):
            mask = make(h, w)
            sdk_rle = mask2rle(mask)
            ours = rle.encode(mask)
            assert ours == sdk_rle, "encoder output differs from the SDK"
            assert np.array_equal(rle.decode(ours, h, w), mask > 0)
            flat = mask.ravel()
            runs = int(np.count_nonzero(flat[1:] != flat[:-1])) + 1
            sdk_enc = median_ms(lambda m=mask: mask2rle(m), args.repeats)
            our_enc = median_ms(lambda m=mask: rle.encode(m), args.repeats)
            sdk_dec = median_ms(
                lambda r=sdk_rle, hh=h, ww=w: decode_rle(r).reshape(hh, ww, 4)[:, :, 3],
                args.repeats,
            )
            our_dec = median_ms(lambda r=sdk_rle, hh=h, ww=w: rle.decode(r, hh, ww), args.repeats)
            print(
                f"{size_name + ' ' + kind:<16}{runs:>8}{len(sdk_rle):>9}"
                f"{sdk_enc:>8.2f}ms{our_enc:>8.2f}ms{sdk_enc / our_enc:>6.1f}"
                f"{sdk_dec:>8.2f}ms{our_dec:>8.2f}ms{sdk_dec / our_dec:>6.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
