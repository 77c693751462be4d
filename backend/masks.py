"""Mask helpers at the bottom of the stack: overlap and a compact in-memory form.

Masks are ``H×W`` bool arrays at the native frame size. :class:`CompactMask`
keeps one as run lengths of the flattened mask (row-major, starting with a run
of ``False``): a few hundred bytes for a typical object instead of ``H·W``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def jaccard(gt: np.ndarray, pred: np.ndarray) -> float:
    """Region similarity J (IoU) of two boolean masks (1 when both are empty)."""
    gt = gt.astype(bool, copy=False)
    pred = pred.astype(bool, copy=False)
    union = np.count_nonzero(gt | pred)
    if union == 0:
        return 1.0
    return np.count_nonzero(gt & pred) / union


@dataclass(frozen=True)
class CompactMask:
    """A bool mask stored as alternating run lengths (False first), uint32."""

    height: int
    width: int
    runs: bytes

    @classmethod
    def encode(cls, mask: np.ndarray) -> CompactMask:
        if mask.ndim != 2:
            raise ValueError(f"a mask must be 2-D, got shape {mask.shape}")
        flat = np.ascontiguousarray(mask, dtype=bool).ravel()
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        bounds = np.concatenate(([0], change, [flat.size]))
        runs = np.diff(bounds)
        if flat.size and flat[0]:
            runs = np.concatenate(([0], runs))
        return cls(int(mask.shape[0]), int(mask.shape[1]), runs.astype(np.uint32).tobytes())

    def decode(self) -> np.ndarray:
        runs = np.frombuffer(self.runs, dtype=np.uint32)
        values = np.zeros(runs.size, dtype=bool)
        values[1::2] = True
        return np.repeat(values, runs).reshape(self.height, self.width)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def nbytes(self) -> int:
        """Memory held by the runs (what a byte budget counts)."""
        return len(self.runs) + 64

    def any(self) -> bool:
        return len(self.runs) > 4
