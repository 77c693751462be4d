"""Click → mask segmenters (weights-free classical and SAM)."""

from backend.segmenter.base import SegmentOutput, Segmenter

__all__ = ["SegmentOutput", "Segmenter"]
